"""Label mappings: train a label set on label maps drawn in another one.

Why: public manual labels rarely use the label set a model predicts (Baby Open Brains ships
FreeSurfer asegs, DrawEM9 models predict tissues), and one network's labels can make another
label set (the bundled DrawEM9 model sums the aseg network's probabilities through
``aseg-to-drawem9``, ``model/card.py``). A mapping is a TSV
``<source>-to-<target>.tsv`` with columns ``source_index``, ``source_name`` and
``target_index``, where ``<target>`` is a built-in label set; shipped mappings live in
``data/labelmaps/`` (``aseg-to-drawem9``). A label map is mapped once, when it is read for
training (``train.cache.read_labels``); a source code the mapping lacks is an error naming
the file and the code, never a silent 0. QC (``qc.py``) reads a label set's DrawEM9 structures
from the shipped mappings, which is why this module sits beside the label sets, below both.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bids_infantseg.model.labels import BUILTIN, LabelSet
from bids_infantseg.utils.errors import InfantsegError

SHIPPED = Path(__file__).resolve().parent.parent / "data" / "labelmaps"
COLUMNS = ("source_index", "source_name", "target_index")


class LabelMapError(InfantsegError, ValueError):
    """A mapping that cannot be read, or a label map holding codes it does not map."""


@dataclass(frozen=True)
class LabelMapping:
    """Source label -> index of the target label set, read from one mapping file."""

    name: str
    path: Path
    codes: tuple[tuple[int, int], ...]  # (source index, target index), sorted
    target: LabelSet
    source_names: tuple[tuple[int, str], ...] = ()  # (source index, source_name), sorted

    @classmethod
    def load(cls, name_or_path: str | Path) -> LabelMapping:
        """A shipped mapping by name (``aseg-to-drawem9``), or a mapping file."""
        path = _resolve(name_or_path)
        name = path.name.removesuffix(".tsv")
        target = BUILTIN.get(name.rpartition("-to-")[2])
        if target is None:
            raise LabelMapError(f"{path}: name it <source>-to-<target>.tsv with a built-in "
                                f"target ({', '.join(BUILTIN)})")
        codes, names = _read_rows(path, target)
        return cls(name, path, codes, target, names)

    def fits(self, labels: LabelSet) -> bool:
        """Whether ``labels`` are this mapping's source labels: every label's index is a
        source index with the same name (case aside), so a site's table whose indices
        happen to be FreeSurfer codes is not taken for an aseg."""
        names = {index: name.lower() for index, name in self.source_names}
        return all(names.get(lab.index) == lab.name.lower() for lab in labels.labels)

    def apply(self, labels: np.ndarray, path: Path) -> np.ndarray:
        """``labels`` (non-negative integers) in the target's indices."""
        lut = np.full(max(int(labels.max()), max(s for s, _ in self.codes)) + 1, -1, np.int64)
        for source, target in self.codes:
            lut[source] = target
        mapped = lut[labels]
        if (mapped < 0).any():
            missing = np.unique(labels[mapped < 0]).tolist()
            raise LabelMapError(f"{path}: label value(s) {missing} are not in the mapping "
                                f"{self.name} ({self.path})")
        return mapped


def shipped_mappings() -> list[str]:
    return sorted(p.stem for p in SHIPPED.glob("*.tsv"))


def _resolve(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = SHIPPED / f"{name_or_path}.tsv"
    if shipped.is_file():
        return shipped
    raise LabelMapError(f"--labels-map {name_or_path}: no such file or shipped mapping "
                        f"({', '.join(shipped_mappings())})")


def _read_rows(path: Path, target: LabelSet) -> tuple[tuple[tuple[int, int], ...],
                                                     tuple[tuple[int, str], ...]]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows or any(c not in rows[0] for c in COLUMNS):
        raise LabelMapError(f"{path}: a mapping needs the columns {', '.join(COLUMNS)}")
    try:
        codes = sorted((int(r["source_index"]), int(r["target_index"])) for r in rows)
    except (TypeError, ValueError) as exc:
        raise LabelMapError(f"{path}: indices must be integers ({exc})") from exc
    sources = [s for s, _ in codes]
    unknown = sorted({t for _, t in codes} - set(target.indices.tolist()))
    if len(set(sources)) != len(sources) or min(sources) < 0 or unknown:
        raise LabelMapError(f"{path}: each source index once, non-negative, and targets "
                            f"among {target.name}'s indices {target.indices.tolist()}"
                            + (f" (not: {unknown})" if unknown else ""))
    names = sorted((int(r["source_index"]), str(r["source_name"] or "").strip()) for r in rows)
    return tuple(codes), tuple(names)
