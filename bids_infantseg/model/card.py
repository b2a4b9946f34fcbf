"""Model folders: a JSON model card plus safetensors weights, one network per view.

The card is the single source of truth for preprocessing (voxel size, grid, intensity
normalisation, views and their weights) and for the label set. Loading never unpickles.

A *derived* model folder holds only a card whose ``derived_from`` names another model folder
(``network``) and a label mapping (``mapping``, ``model/labelmap.py``): it runs that
model's networks and sums their class probabilities into the mapping's target label set
before anything else sees them. Why: one set of weights then serves two label sets (the
bundled DrawEM9 model is the aseg network summed into DrawEM9 tissues, docs/accuracy.md).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from bids_infantseg.model.architectures import (
    NetworkSettings,
    UnknownArchitectureError,
    architecture_of,
    build_network,
    settings_from_card,
    settings_to_card,
)
from bids_infantseg.model.labelmap import LabelMapError, LabelMapping
from bids_infantseg.model.labels import LabelSet
from bids_infantseg.model.views import VIEW_AXIS
from bids_infantseg.utils.errors import InfantsegError
from bids_infantseg.utils.files import atomic_write

CARD_FILE = "card.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FORMAT = "bids_infantseg-model/1"
DEFAULT_MODEL = "drawem9-synth-starter"
"""What ``--model default`` means (a derived model: the aseg network summed into DrawEM9)."""
DERIVED_KEY = "derived_from"


class ModelError(InfantsegError, ValueError):
    """A model folder or name that cannot be used."""


@dataclass
class ModelCard:
    """Everything inference and training need to know about a model, besides its weights."""

    name: str
    version: str
    architecture: NetworkSettings  # its class names the network (model/architectures.py)
    labels: LabelSet
    voxel_size_mm: float
    grid_shape: tuple[int, int, int]
    views: dict[str, float]  # view name -> aggregation weight
    intensity: dict = field(default_factory=lambda: {"method": "percentile",
                                                     "lower": 0.5, "upper": 99.5})
    description: str = ""
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    weights_dtype: str = "float32"
    weights_sha256: str = ""
    """Checksum of the weights file, written by :func:`save_model` (empty on older cards):
    loading compares it, so a damaged file (a flipped byte anywhere) is refused by name."""
    derived: Derivation | None = None  # a derived model's network and mapping

    def __post_init__(self) -> None:
        unknown = set(self.views) - set(VIEW_AXIS)
        if unknown or not self.views:
            raise ModelError(f"model {self.name!r}: views must be among {sorted(VIEW_AXIS)}, "
                             f"got {sorted(self.views)}")
        network = architecture_of(self.architecture)
        if any(s % network.grid_multiple for s in self.grid_shape):
            raise ModelError(f"model {self.name!r}: grid {self.grid_shape} is not a multiple "
                             f"of {network.grid_multiple} ({network.name} pools that much)")
        outputs = self.derived.network.labels if self.derived else self.labels
        if self.architecture.num_classes != len(outputs):
            raise ModelError(f"model {self.name!r}: {self.architecture.num_classes} classes "
                             f"but {len(outputs)} labels")

    def to_dict(self) -> dict:
        if self.derived:
            return {"format": CARD_FORMAT, "name": self.name, "version": self.version,
                    "description": self.description, DERIVED_KEY: self.derived.spec,
                    "metrics": self.metrics}
        return {
            "format": CARD_FORMAT,
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "architecture": settings_to_card(self.architecture),
            "labels": {"name": self.labels.name, "non_brain": list(self.labels.non_brain),
                       "labels": self.labels.to_records()},
            "voxel_size_mm": self.voxel_size_mm,
            "grid_shape": list(self.grid_shape),
            "views": [{"name": v, "weight": w} for v, w in self.views.items()],
            "intensity": self.intensity,
            "training": self.training,
            "metrics": self.metrics,
            "weights": {"file": WEIGHTS_FILE, "dtype": self.weights_dtype,
                        **({"sha256": self.weights_sha256} if self.weights_sha256 else {})},
        }

    @classmethod
    def from_dict(cls, data: dict) -> ModelCard:
        if data.get("format") != CARD_FORMAT:
            raise ModelError(f"not a {CARD_FORMAT} model card (format={data.get('format')!r})")
        return cls(
            name=data["name"],
            version=data["version"],
            description=data.get("description", ""),
            architecture=settings_from_card(data["architecture"]),
            labels=LabelSet.from_records(data["labels"]["name"], data["labels"]["labels"],
                                         tuple(data["labels"].get("non_brain", (0,)))),
            voxel_size_mm=float(data["voxel_size_mm"]),
            grid_shape=tuple(int(s) for s in data["grid_shape"]),
            views={v["name"]: float(v["weight"]) for v in data["views"]},
            intensity=data.get("intensity", {}),
            training=data.get("training", {}),
            metrics=data.get("metrics", {}),
            weights_dtype=data.get("weights", {}).get("dtype", "float32"),
            weights_sha256=data.get("weights", {}).get("sha256", ""),
        )


@dataclass(frozen=True)
class Derivation:
    """How a derived model makes its labels: ``network_path``'s networks, their class
    probabilities summed per target label of ``mapping``."""

    network: ModelCard
    network_path: Path  # the network's model folder (card and weights)
    mapping: LabelMapping
    spec: dict  # the card's ``derived_from``, as written

    def classes(self) -> np.ndarray:
        """For each network class, the derived label set's class it is summed into."""
        target = self.mapping.target.indices.tolist()
        codes = dict(self.mapping.codes)
        return np.array([target.index(codes[lab.index]) for lab in self.network.labels.labels])

    def record(self) -> dict:
        """The network and the mapping with their checksums, as sidecars record them."""
        return {"Network": {"Name": self.network.name, "Version": self.network.version,
                            "SHA256": sha256_file(self.network_path / WEIGHTS_FILE)},
                "Mapping": {"Name": self.mapping.name,
                            "SHA256": sha256_file(self.mapping.path)}}


class SummedClasses(nn.Module):
    """A network whose softmax is summed into coarser classes (``classes[k]``: the class that
    network class ``k`` joins). It returns the log of the summed probabilities, so the
    softmax inference takes of any network's output gives exactly those sums, and every step
    after it (views, flips, MC dropout, refinement, argmax) sees only the coarser classes."""

    def __init__(self, net: nn.Module, classes: np.ndarray, num_classes: int) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("groups", nn.functional.one_hot(
            torch.from_numpy(classes).long(), num_classes).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(self.net(x).float(), dim=1)
        summed = torch.einsum("nchw,ck->nkhw", probs, self.groups)
        return torch.log(summed.clamp_min(torch.finfo(summed.dtype).tiny))


@dataclass
class Model:
    """A loaded model: its card, one network per view, where it came from and its checksum
    (:func:`model_sha256`)."""

    card: ModelCard
    nets: dict[str, nn.Module]
    path: Path
    sha256: str

    def provenance(self) -> dict:
        derived = self.card.derived.record() if self.card.derived else {}
        return {"Name": self.card.name, "Version": self.card.version,
                "SHA256": self.sha256, "Path": str(self.path), **derived}


def bundled_models_dir() -> Path:
    return Path(str(resources.files("bids_infantseg") / "data" / "models"))


def bundled_model_names() -> list[str]:
    """The bundled models' names (their folders holding a card), sorted."""
    return sorted(p.parent.name for p in bundled_models_dir().glob(f"*/{CARD_FILE}"))


def resolve_model_path(spec: str | Path) -> Path:
    """A bundled model name (``default`` included) or a folder path -> the model folder."""
    text = str(spec)
    name = DEFAULT_MODEL if text == "default" else text
    bundled = bundled_models_dir() / name
    if (bundled / CARD_FILE).is_file():
        return bundled
    path = Path(text).expanduser()
    if path.is_dir() and (path / CARD_FILE).is_file():
        return path.resolve()
    if path.is_dir():
        raise ModelError(f"{path}: model folder has no {CARD_FILE}")
    raise ModelError(f"{text}: no such model folder, and not a bundled model "
                     f"(bundled: {', '.join(bundled_model_names()) or 'none'})")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_card(folder: Path) -> ModelCard:
    """The card of a model folder; every problem is one :class:`ModelError` line naming it.
    A derived card comes back as its network's card with the mapping's labels (and its own
    name, version, description and metrics), ``derived`` saying where the weights are."""
    path = Path(folder) / CARD_FILE
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and DERIVED_KEY in data:
            return _derived_card(Path(folder), data)
        return ModelCard.from_dict(data)
    except UnknownArchitectureError as exc:
        raise ModelError(f"{path}: {exc}") from exc
    except LabelMapError as exc:
        raise ModelError(f"{path}: {exc}") from exc
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ModelError(f"{path}: unreadable model card ({exc})") from exc


def _derived_card(folder: Path, data: dict) -> ModelCard:
    """A derived card: ``network`` (a folder beside the card's, a bundled name or a path) and
    ``mapping`` (a file in the card's folder or a shipped mapping) must fit each other."""
    path = folder / CARD_FILE
    if data.get("format") != CARD_FORMAT:
        raise ModelError(f"{path}: not a {CARD_FORMAT} model card "
                         f"(format={data.get('format')!r})")
    spec = data[DERIVED_KEY]
    beside = folder / str(spec["network"])
    network_path = beside.resolve() if (beside / CARD_FILE).is_file() \
        else resolve_model_path(spec["network"])
    network = read_card(network_path)
    if network.derived:
        raise ModelError(f"{path}: its network {spec['network']} is itself a derived model; "
                         "name the model folder that holds the weights")
    local = folder / str(spec["mapping"])
    mapping = LabelMapping.load(local if local.is_file() else spec["mapping"])
    if not mapping.fits(network.labels) or \
            any(lab.index not in dict(mapping.codes) for lab in network.labels.labels):
        raise ModelError(f"{path}: mapping {mapping.name} ({mapping.path}) does not map "
                         f"every label of {network.name} ({network.labels.name}) by index "
                         "and name")
    return replace(network, name=data["name"], version=data["version"],
                   description=data.get("description", ""), labels=mapping.target,
                   metrics=data.get("metrics", {}),
                   derived=Derivation(network, network_path, mapping, dict(spec)))


def model_sha256(folder: Path, card: ModelCard | None = None) -> str:
    """A model's checksum: its weights file's; a derived model's, that of its network's
    weights checksum and its mapping file's (new weights or a new mapping: new results)."""
    card = card or read_card(folder)
    if not card.derived:
        return sha256_file(Path(folder) / WEIGHTS_FILE)
    parts = card.derived.record()
    return hashlib.sha256(f"{parts['Network']['SHA256']} {parts['Mapping']['SHA256']}"
                          .encode()).hexdigest()


def load_network(spec: str | Path, device: str | torch.device = "cpu") -> Model:
    """The model whose weights ``spec`` runs, with its own labels: a derived model's network,
    any other model itself. Why: training warm-starts from weights, never from a mapping."""
    folder = resolve_model_path(spec)
    card = read_card(folder)
    return load_model(card.derived.network_path if card.derived else folder, device)


def load_model(spec: str | Path, device: str | torch.device = "cpu") -> Model:
    """Load a model folder (safetensors only, never pickle) onto ``device`` in eval mode; a
    derived model's networks return the summed log-probabilities (:class:`SummedClasses`)."""
    folder = resolve_model_path(spec)
    card = read_card(folder)
    weights_path = (card.derived.network_path if card.derived else folder) / WEIGHTS_FILE
    if not weights_path.is_file():
        raise ModelError(f"{weights_path}: missing weights file")
    tensors = read_weights(weights_path)
    sha256 = sha256_file(weights_path)
    if card.weights_sha256 and sha256 != card.weights_sha256:
        raise ModelError(f"{weights_path}: damaged, or not this model's weights: its SHA-256 "
                         f"{sha256[:12]}... differs from {card.weights_sha256[:12]}... in "
                         f"{CARD_FILE}; {_REPLACE}")
    nets = {}
    for view in card.views:
        prefix = f"{view}."
        state = {k[len(prefix):]: v.float() for k, v in tensors.items() if k.startswith(prefix)}
        net = build_network(card.architecture)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelError(f"{weights_path}: weights for view {view!r} do not match the "
                             f"card's architecture ({str(exc).splitlines()[0]})") from exc
        if card.derived:
            net = SummedClasses(net, card.derived.classes(), len(card.labels))
        nets[view] = net.to(device).eval()
    return Model(card, nets, folder, model_sha256(folder, card) if card.derived else sha256)


_REPLACE = "replace the model folder with an intact copy"
_HEADER_ERROR = "Error while deserializing header: "


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a truncated or damaged file, or one that cannot be
    read, is one :class:`ModelError` line naming it and what is wrong (never a traceback)."""
    try:
        return load_file(str(path))
    except SafetensorError as exc:
        raise ModelError(f"{path}: not a usable weights file: {_damage(path, exc)}; "
                         f"{_REPLACE}") from exc
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the weights file ({exc.strerror or exc})") \
            from exc


def _damage(path: Path, exc: SafetensorError) -> str:
    """What safetensors refused, in words: a file shorter than its header says (truncated),
    else the header's own error (a changed byte)."""
    size = path.stat().st_size
    if size < 8:
        return f"truncated ({size} bytes, not even the header's length)"
    with path.open("rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if 8 + length > size:
            return (f"truncated, or its header length damaged (the header is said to be "
                    f"{length} bytes, the file holds {size})")
        header = handle.read(length)
    try:
        end = 8 + length + max((entry["data_offsets"][1] for key, entry in
                                json.loads(header).items() if key != "__metadata__"),
                               default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        end = 0
    if size < end:
        return f"truncated ({size} of {end} bytes)"
    return f"damaged header ({str(exc).removeprefix(_HEADER_ERROR)})"


FILE_MODE = 0o644
"""Model files are readable by everyone: a model folder is shared (a lab's models folder, a
container image run as another user), whatever the writer's umask."""


def save_model(folder: Path, card: ModelCard, nets: dict[str, nn.Module]) -> Path:
    """Write a model folder; weights in ``card.weights_dtype`` (float16 halves the file).

    One network may serve several views (``nets`` then maps those views to the same object):
    each view gets its own copy of the tensors, since safetensors refuses tensors that share
    memory. Files are replaced atomically and made readable by everyone (0644).
    """
    folder = Path(folder)
    if card.derived:
        raise ModelError(f"model {card.name!r} is derived from {card.derived.network.name}: "
                         "it has no weights of its own to save")
    folder.mkdir(parents=True, exist_ok=True)
    if set(nets) != set(card.views):
        raise ModelError(f"networks {sorted(nets)} do not match card views {sorted(card.views)}")
    dtype = getattr(torch, card.weights_dtype)
    tensors = {}
    for view, net in nets.items():
        for key, value in net.state_dict().items():
            value = value.detach().cpu()
            if value.is_floating_point():
                value = value.to(dtype)
            tensors[f"{view}.{key}"] = value.clone().contiguous()
    metadata = {"format": CARD_FORMAT, "name": card.name}
    atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp), metadata),
                 FILE_MODE)
    written = replace(card, weights_sha256=sha256_file(folder / WEIGHTS_FILE))
    atomic_write(folder / CARD_FILE,
                 lambda tmp: tmp.write_text(json.dumps(written.to_dict(), indent=2) + "\n"),
                 FILE_MODE)
    return folder
