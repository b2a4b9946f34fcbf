"""Preprocessed training volumes, cached on disk in the work directory and read lazily.

Each pair is brought onto the model grid exactly as the participant level does it
(``conform`` centred on the head's intensity centroid, the card's percentile normalisation);
its label map is read in the label set's indices (through the pair's label mapping, if any:
:func:`read_labels`), sampled onto the same grid by nearest neighbour and turned into class
numbers. The two arrays are saved as ``.npy`` files and memory-mapped, so an epoch reads only
the slices it draws: a dHCP-sized study (~800 volumes, ~100k slices per view) never has to
fit in memory. Every check of a pair (readable image, integer labels, every label in the
lookup table) happens here, before training starts; a failing pair is logged and left out,
and the reason is cached too.

Cache entries are keyed by the files (path, size, modification time) and everything that
changes the arrays (grid, voxel size, intensity settings, label indices, label mapping), and
written into a
temporary folder then renamed, so parallel writers (DDP ranks, worker processes) and killed
runs never leave half a volume behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from bids_infantseg.core.conform import Grid, conform, intensity_center
from bids_infantseg.io.images import BadImageError, load_label_map, load_t2w
from bids_infantseg.model.card import ModelCard
from bids_infantseg.model.labelmap import LabelMapError, LabelMapping
from bids_infantseg.model.views import VIEW_AXIS
from bids_infantseg.train.augment import augment_slice
from bids_infantseg.train.pairs import Pair, Skipped
from bids_infantseg.utils.errors import InfantsegError

LOGGER = logging.getLogger("bids_infantseg.train")
CACHE_VERSION = 1
INFO_FILE = "info.json"


@dataclass(frozen=True)
class Volume:
    """One cached training volume: where its arrays are and what is in them."""

    key: str
    subject: str
    session: str | None
    folder: Path
    slices: dict[str, tuple[int, ...]]  # view -> slices holding signal
    counts: tuple[int, ...]  # voxels per class
    grid_affine: tuple[tuple[float, ...], ...]
    image_path: Path
    labels_path: Path
    age_weeks: float | None = None
    mapping: LabelMapping | None = None

    @property
    def image_file(self) -> Path:
        return self.folder / "image.npy"

    @property
    def classes_file(self) -> Path:
        return self.folder / "classes.npy"

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The image and class map, memory-mapped (read only)."""
        return (np.load(self.image_file, mmap_mode="r"),
                np.load(self.classes_file, mmap_mode="r"))

    def grid(self, shape: Sequence[int]) -> Grid:
        return Grid(tuple(int(s) for s in shape), np.asarray(self.grid_affine))

    def reference(self) -> tuple[np.ndarray, np.ndarray]:
        """The manual label map on the scan's own grid, in the label set's indices."""
        return read_labels(self.labels_path, self.mapping)


class LabelDataError(InfantsegError, ValueError):
    """A pair that cannot be used (the message names the file and the problem)."""


def read_labels(path: Path, mapping: LabelMapping | None) -> tuple[np.ndarray, np.ndarray]:
    """A label map and its affine, its values through ``mapping`` when there is one: the one
    place training reads labels, so the cache and the evaluation see the same indices."""
    labels, affine = load_label_map(path)
    return (labels if mapping is None else mapping.apply(labels, path)), affine


def class_lookup(indices: np.ndarray, max_value: int) -> np.ndarray:
    """Label value -> class number (-1 for values outside the label set)."""
    lut = np.full(max(int(indices.max()), max_value) + 1, -1, dtype=np.int64)
    lut[indices] = np.arange(len(indices))
    return lut


def nearest_labels(labels: np.ndarray, affine: np.ndarray, grid: Grid) -> np.ndarray:
    """Nearest-neighbour sample of a native label map at the centres of ``grid``'s voxels
    (0 outside the native field of view)."""
    to_native = np.linalg.inv(affine) @ grid.affine
    nx, ny, nz = grid.shape
    out = np.zeros(grid.shape, dtype=labels.dtype)
    ij = np.stack(np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij"), -1).reshape(-1, 2)
    for k in range(nz):
        ijk = np.column_stack([ij, np.full(len(ij), k), np.ones(len(ij))])
        native = np.rint((ijk @ to_native.T)[:, :3]).astype(np.int64)
        inside = np.all((native >= 0) & (native < np.array(labels.shape[:3])), axis=1)
        values = np.zeros(len(ij), dtype=labels.dtype)
        values[inside] = labels[tuple(native[inside].T)]
        out[:, :, k] = values.reshape(nx, ny)
    return out


def _cache_key(pair: Pair, card: ModelCard) -> str:
    def stat(path: Path) -> list:
        info = Path(path).stat()
        return [str(Path(path).resolve()), info.st_size, info.st_mtime_ns]

    source = [CACHE_VERSION, stat(pair.scan.path), stat(pair.labels), card.voxel_size_mm,
              list(card.grid_shape), card.intensity, card.labels.indices.tolist()]
    if pair.mapping is not None:
        source.append(pair.mapping.codes)
    return hashlib.sha256(json.dumps(source).encode()).hexdigest()[:20]


def preprocess(pair: Pair, card: ModelCard) -> tuple[np.ndarray, np.ndarray, dict]:
    """The pair on the model grid: normalised image, class map, and what the cache records."""
    try:
        img = load_t2w(pair.scan.path)
        labels, label_affine = read_labels(pair.labels, pair.mapping)
    except (BadImageError, LabelMapError) as exc:
        raise LabelDataError(str(exc)) from exc
    if labels.shape != img.shape[:3] or not np.allclose(label_affine, img.affine, atol=1e-3):
        raise LabelDataError(f"{pair.labels}: not on the grid of {pair.scan.path.name} "
                             f"(shape {labels.shape} vs {img.shape[:3]})")
    indices = card.labels.indices.astype(np.int64)
    present = np.unique(labels)
    unknown = sorted(set(present.tolist()) - set(indices.tolist()))
    if unknown:
        raise LabelDataError(f"{pair.labels}: label value(s) {unknown} are not in the lookup "
                             f"table (its indices: {indices.tolist()})")
    data = np.asanyarray(img.dataobj)
    try:
        volume, grid = conform(data, img.affine, card.voxel_size_mm, card.grid_shape,
                               intensity=card.intensity,
                               center_world=intensity_center(data, img.affine))
    except ValueError as exc:  # e.g. an empty image: nothing to centre on or normalise
        raise LabelDataError(f"{pair.scan.path}: cannot be put on the model grid ({exc})") \
            from exc
    classes = class_lookup(indices, int(present.max()))[nearest_labels(labels, img.affine, grid)]
    classes = classes.astype(np.uint8 if len(indices) <= 255 else np.int16)
    slices = {}
    for view, axis in VIEW_AXIS.items():
        others = tuple(a for a in range(3) if a != axis)
        slices[view] = np.flatnonzero(np.abs(volume).max(axis=others) > 0).tolist()
    info = {
        "key": pair.key, "subject": pair.subject, "session": pair.scan.session,
        "image": str(pair.scan.path), "labels": str(pair.labels),
        "age_weeks": pair.scan.age.weeks if pair.scan.age else None,
        "grid_affine": grid.affine.tolist(), "slices": slices,
        "counts": np.bincount(classes.ravel().astype(np.int64),
                              minlength=len(indices)).tolist(),
    }
    return volume, classes, info


def _write_entry(folder: Path, pair: Pair, card: ModelCard) -> dict:
    """Preprocess ``pair`` into ``folder`` (atomically); returns its info (or its error)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        try:
            volume, classes, info = preprocess(pair, card)
            np.save(building / "image.npy", volume)
            np.save(building / "classes.npy", classes)
        except LabelDataError as exc:
            info = {"key": pair.key, "error": str(exc)}
        (building / INFO_FILE).write_text(json.dumps(info) + "\n")
        with contextlib.suppress(OSError):  # another process wrote it first: as good as ours
            os.rename(building, folder)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return json.loads((folder / INFO_FILE).read_text())


def _entry(args: tuple[Path, Pair, ModelCard]) -> dict:
    folder, pair, card = args
    torch.set_num_threads(1)
    if (folder / INFO_FILE).is_file():
        return json.loads((folder / INFO_FILE).read_text())
    return _write_entry(folder, pair, card)


@dataclass
class CacheResult:
    volumes: list[Volume]
    skipped: list[Skipped] = field(default_factory=list)


def prepare(pairs: list[Pair], card: ModelCard, cache_dir: Path, *, rank: int = 0,
            world: int = 1, processes: int = 1, barrier=None) -> CacheResult:
    """Cache every pair (rank ``r`` of ``world`` does pairs ``r, r+world, ...``, with
    ``processes`` worker processes), wait for the others, then read all entries."""
    folders = [Path(cache_dir) / _cache_key(pair, card) for pair in pairs]
    todo = [(f, p, card) for i, (f, p) in enumerate(zip(folders, pairs, strict=True))
            if i % world == rank and not (f / INFO_FILE).is_file()]
    if todo:
        LOGGER.info("preprocessing %d volume(s) into %s", len(todo), cache_dir)
        if processes > 1 and len(todo) > 1:
            # a fork server: forked children of a process whose torch threads ran can hang
            with ProcessPoolExecutor(min(processes, len(todo)),
                                     mp_context=get_context("forkserver")) as pool:
                for info in pool.map(_entry, todo):
                    LOGGER.debug("cached %s", info["key"])
        else:
            for item in todo:
                _write_entry(item[0], item[1], item[2])
    if barrier is not None:
        barrier()
    result = CacheResult([])
    for folder, pair in zip(folders, pairs, strict=True):
        info = json.loads((folder / INFO_FILE).read_text())
        if "error" in info:
            LOGGER.warning("left out %s: %s", pair.scan.rel_path, info["error"])
            result.skipped.append(Skipped(pair.scan.rel_path, info["error"]))
            continue
        result.volumes.append(Volume(
            key=info["key"], subject=info["subject"], session=info["session"], folder=folder,
            slices={v: tuple(s) for v, s in info["slices"].items()},
            counts=tuple(info["counts"]),
            grid_affine=tuple(tuple(r) for r in info["grid_affine"]),
            image_path=Path(info["image"]), labels_path=Path(info["labels"]),
            age_weeks=info.get("age_weeks"), mapping=pair.mapping))
    return result


def slice_pool(volumes: list[Volume], views: Sequence[str]) -> np.ndarray:
    """Every slice holding signal, as rows ``(volume, axis, slice)`` (int32)."""
    rows = [(v, VIEW_AXIS[view], s) for v, vol in enumerate(volumes) for view in views
            for s in vol.slices[view]]
    return np.asarray(rows, dtype=np.int32).reshape(-1, 3)


def epoch_items(pool: np.ndarray, max_slices: int | None,
                rng: np.random.Generator) -> np.ndarray:
    """The slices of one epoch: all of ``pool`` (or ``max_slices`` drawn without
    replacement), shuffled."""
    order = rng.permutation(len(pool))
    if max_slices is not None and max_slices < len(order):
        order = order[:max_slices]
    return pool[order]


class SliceDataset(Dataset):
    """Item ``(epoch, volume, axis, slice)`` -> image ``(1, H, W)`` float32 and classes
    ``(H, W)`` int64, augmented with a generator seeded by the item itself, so a slice's
    augmentation does not depend on workers, ranks or what ran before."""

    def __init__(self, volumes: list[Volume], *, augment: bool, seed: int,
                 sagittal_lut: np.ndarray | None = None) -> None:
        self.volumes = volumes
        self.sagittal_lut = sagittal_lut  # sagittal targets (``train.sides``), if any
        self.augment = augment
        self.seed = seed
        self._open: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.volumes)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_open": {}}  # memory maps are reopened in each worker

    def __getitem__(self, item) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, vol, axis, index = (int(x) for x in item)
        if vol not in self._open:
            self._open[vol] = self.volumes[vol].arrays()
        image, classes = self._open[vol]
        image = np.array(np.take(image, index, axis=axis), dtype=np.float32)
        target = np.array(np.take(classes, index, axis=axis), dtype=np.int64)
        if self.augment:
            rng = np.random.default_rng([self.seed, epoch, vol, axis, index])
            image, target = augment_slice(image, target, rng)
        if axis == VIEW_AXIS["sagittal"] and self.sagittal_lut is not None:
            target = self.sagittal_lut[target]
        return torch.from_numpy(image[None]), torch.from_numpy(target)
