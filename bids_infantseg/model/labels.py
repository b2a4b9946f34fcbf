"""Label sets: which index means which structure, and their BIDS ``dseg.tsv`` form.

A network predicts classes ``0..N-1``; a label set maps class ``k`` to ``labels[k]``, whose
``index`` is what lands in the label map. Keeping indices as published (dHCP DrawEM) lets
outputs line up with dHCP-trained models and DrawEM results.
"""

from __future__ import annotations

import colorsys
import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bids_infantseg.utils.errors import InfantsegError


@dataclass(frozen=True)
class Label:
    """One structure: its index in label maps, a name, a short name and a display colour."""

    index: int
    name: str
    abbreviation: str
    color: str  # "#rrggbb"


@dataclass(frozen=True)
class LabelSet:
    """An ordered set of labels; position in ``labels`` is the network's class number."""

    name: str
    labels: tuple[Label, ...]
    non_brain: tuple[int, ...] = (0,)
    """Indices outside the brain mask (outside the head, and non-brain head tissue)."""

    def __post_init__(self) -> None:
        indices = [lab.index for lab in self.labels]
        if len(set(indices)) != len(indices):
            raise ValueError(f"label set {self.name!r} repeats an index: {indices}")
        abbreviations = [lab.abbreviation for lab in self.labels]
        if len(set(abbreviations)) != len(abbreviations):
            raise ValueError(f"label set {self.name!r} repeats an abbreviation: {abbreviations}")

    def __len__(self) -> int:
        return len(self.labels)

    def same_classes(self, other: LabelSet) -> bool:
        """Whether ``other`` has the same classes (index and name in order): a network
        trained on one serves the other. Colours, abbreviations and the set's name may
        differ (a card written before a palette change still fits)."""
        return ([(lab.index, lab.name) for lab in self.labels]
                == [(lab.index, lab.name) for lab in other.labels])

    @property
    def indices(self) -> np.ndarray:
        """Label-map index of each class, so ``indices[argmax]`` is a label map."""
        return np.array([lab.index for lab in self.labels], dtype=np.int16)

    @property
    def brain_indices(self) -> tuple[int, ...]:
        return tuple(lab.index for lab in self.labels if lab.index not in self.non_brain)

    def by_index(self, index: int) -> Label:
        for lab in self.labels:
            if lab.index == index:
                return lab
        raise KeyError(f"label set {self.name!r} has no index {index}")

    def to_records(self) -> list[dict]:
        return [
            {"index": lab.index, "name": lab.name, "abbreviation": lab.abbreviation,
             "color": lab.color}
            for lab in self.labels
        ]

    @classmethod
    def from_records(cls, name: str, records: list[dict],
                     non_brain: tuple[int, ...] = (0,)) -> LabelSet:
        """Labels from table rows; a row without a hex colour (none, empty, ``n/a``) gets the
        ``distinct_color`` of its class (index 0 black), so a site's table without a colour
        column still draws every label apart (it once drew them all #808080)."""
        labels, position = [], 0
        for r in records:
            index = int(r["index"])
            color = str(r.get("color") or "").strip()
            if not HEX_COLOR.fullmatch(color):
                color = "#000000" if index == 0 else distinct_color(position)
            position += index != 0
            labels.append(Label(index, str(r["name"]), str(r.get("abbreviation") or r["name"]),
                                color))
        return cls(name, tuple(labels), tuple(int(i) for i in non_brain))

    def dseg_tsv(self) -> str:
        """The BIDS lookup table (``index name abbreviation color brain``) as TSV text;
        ``brain`` (yes/no, defined in ``DSEG_COLUMNS``) says which labels the brain mask
        and brain volumes count, so users and tools need not know the label set."""
        lines = ["index\tname\tabbreviation\tcolor\tbrain"]
        lines += [f"{lab.index}\t{lab.name}\t{lab.abbreviation}\t{lab.color}\t"
                  f"{'no' if lab.index in self.non_brain else 'yes'}" for lab in self.labels]
        return "\n".join(lines) + "\n"


HEX_COLOR = re.compile(r"#[0-9a-fA-F]{6}|#[0-9a-fA-F]{3}")
"""The BIDS ``color`` column's form (hexadecimal); anything else counts as no colour."""

KELLY = ("#f3c300", "#875692", "#f38400", "#a1caf1", "#be0032", "#008856", "#e68fac",
         "#0067a5", "#f99379", "#604e97", "#f6a600", "#b3446c", "#dcd300", "#882d17",
         "#8db600", "#654522", "#e25822")
"""Kelly's (1965) colours of maximum contrast, in his order, less white, black, grey, buff and
olive green, which vanish on a greyscale MRI or on a white page."""


def distinct_color(position: int) -> str:
    """The colour of the ``position``-th labelled class (0 = first label after background):
    Kelly's colours, then hues a golden angle apart, so any table gets the same colours in
    the same class order and neighbouring classes differ most."""
    if position < len(KELLY):
        return KELLY[position]
    hue = ((position - len(KELLY)) * 0.381966 + 0.05) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.9, 0.95)
    return "#" + "".join(f"{round(c * 255):02x}" for c in (red, green, blue))


class BrainColumnError(InfantsegError, ValueError):
    """A dseg.tsv's ``brain`` column holds something other than yes or no."""


DSEG_COLUMNS = {
    "brain": {
        "Description": "Whether the label is inside the brain mask and counted in brain "
                       "volumes (brain tissue and intracranial CSF) or not (outside the head, "
                       "non-brain head tissue).",
        "Levels": {"yes": "brain tissue or intracranial CSF", "no": "outside the brain mask"},
    },
}
"""Sidecar of ``dseg_tsv``: defines its column beyond the BIDS ones."""


def read_dseg_tsv(path: Path, name: str | None = None) -> LabelSet:
    """Read a BIDS ``dseg.tsv`` (needs ``index`` and ``name`` columns); a ``brain`` column,
    where present, gives the non-brain labels (otherwise only index 0 is non-brain)."""
    path = Path(path)
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows or "index" not in rows[0] or "name" not in rows[0]:
        raise ValueError(f"{path}: a dseg.tsv needs 'index' and 'name' columns")
    rows.sort(key=lambda r: int(r["index"]))
    if name is None:
        name = path.name.split("desc-")[-1].split("_")[0] if "desc-" in path.name else path.stem
    non_brain: tuple[int, ...] = (0,)
    if "brain" in rows[0]:
        flags = [(row["brain"] or "").strip().lower() for row in rows]
        if not set(flags) <= {"yes", "no"}:
            raise BrainColumnError(f"{path}: column 'brain' must hold yes or no, "
                                   f"not {sorted(set(flags))}")
        non_brain = tuple(int(row["index"]) for row, flag in zip(rows, flags, strict=True)
                          if flag == "no")
    return LabelSet.from_records(name, rows, non_brain)


# dHCP structural pipeline (DrawEM) tissue labels, as released in desc-drawem9_dseg.
# 0 is outside the head; 4 "Background" is non-brain tissue inside the head mask.
# Colours (docs/design.md, "Label colours"): saturated hues that stand out on a T2w, dark ones
# (blue, violet, red) for tissue bright on T2 (fluid, newborn white matter), light ones for
# tissue dark on T2; and structures that touch get hues far apart, so that neither their fills
# nor two outlines side by side read as a third label. White matter was red beside yellow
# cortex (two outlines read as the cerebellum's orange) and ventricles violet beside a pink
# hippocampus; now cortex yellow / white matter violet / CSF blue, ventricles red, deep grey
# green, hippocampus cyan, brainstem pink, cerebellum orange.
DRAWEM9 = LabelSet(
    "drawem9",
    (
        Label(0, "Unknown", "UNK", "#000000"),
        Label(1, "Cerebrospinal fluid", "CSF", "#0050ff"),
        Label(2, "Cortical grey matter", "cGM", "#ffd400"),
        Label(3, "White matter", "WM", "#8c1eff"),
        Label(4, "Background", "Bkg", "#a0522d"),
        Label(5, "Ventricles", "Ven", "#e8000b"),
        Label(6, "Cerebellum", "Cbm", "#ff8c00"),
        Label(7, "Deep grey matter", "dGM", "#00d84a"),
        Label(8, "Brainstem", "BS", "#ff78b4"),
        Label(9, "Hippocampus and amygdala", "Hip", "#00e5ff"),
    ),
    non_brain=(0, 4),
)



def _aseg_labels() -> tuple[Label, ...]:
    """The lateralised FreeSurfer aseg structures of infant asegs, in index order."""
    sided = (  # left index, right index, name without side, abbreviation, colour
        (2, 41, "Cerebral-White-Matter", "WM", "#f5f5f5"),
        (3, 42, "Cerebral-Cortex", "Ctx", "#cd3e4e"),
        (4, 43, "Lateral-Ventricle", "LV", "#781286"),
        (5, 44, "Inf-Lat-Vent", "ILV", "#c43afa"),
        (7, 46, "Cerebellum-White-Matter", "CbWM", "#dcf8a4"),
        (8, 47, "Cerebellum-Cortex", "CbCtx", "#e69422"),
        (10, 49, "Thalamus", "Tha", "#00760e"),
        (11, 50, "Caudate", "Cau", "#7abadc"),
        (12, 51, "Putamen", "Put", "#ec0db0"),
        (13, 52, "Pallidum", "Pal", "#0c30ff"),
        (17, 53, "Hippocampus", "Hip", "#dcd814"),
        (18, 54, "Amygdala", "Amy", "#67ffff"),
        (26, 58, "Accumbens-area", "Acc", "#ffa500"),
        (28, 60, "VentralDC", "VDC", "#a52a2a"),
    )
    labels = [Label(0, "Unknown", "UNK", "#000000"),
              Label(14, "3rd-Ventricle", "3V", "#ccb68e"),
              Label(15, "4th-Ventricle", "4V", "#2acca4"),
              Label(16, "Brain-Stem", "BS", "#779fb0"),
              Label(24, "CSF", "CSF", "#3c3c3c")]
    for left, right, name, abbreviation, colour in sided:
        labels.append(Label(left, f"Left-{name}", f"L-{abbreviation}", colour))
        labels.append(Label(right, f"Right-{name}", f"R-{abbreviation}",
                            "#0d30ff" if right == 52 else colour))  # the LUT's one difference
    return tuple(sorted(labels, key=lambda lab: lab.index))


# FreeSurfer aseg structures as the real infant asegs label them (FreeSurferColorLUT indices,
# names and colours), each side its own label. Rarer codes of those maps fold into these when
# they are synthesis sources (data/synth/freesurfer-aseg.json).
ASEG = LabelSet("aseg", _aseg_labels(), non_brain=(0,))


@dataclass(frozen=True)
class LabelGroup:
    """A training target coarser than its label set: the truth is one of ``members`` (label
    indices), but the source does not say which (a fetal atlas's deep grey matter for the
    aseg set's thalamus, caudate, putamen, ...). Only synthesis and the loss know groups; a
    model never writes one. ``index`` lies above every index of the set."""

    index: int
    name: str
    members: tuple[int, ...]


def _sided_groups(first: int, name: str, left: tuple[int, ...],
                  right: tuple[int, ...]) -> tuple[LabelGroup, LabelGroup]:
    return LabelGroup(first, f"Left-{name}", left), LabelGroup(first + 1, f"Right-{name}", right)


LABEL_GROUPS: dict[str, tuple[LabelGroup, ...]] = {
    ASEG.name: (
        # a source's ventricles may hold the 3rd and 4th ventricles (the fetal atlases'
        # intra-axial CSF does), so both sides' groups have them
        *_sided_groups(10001, "Ventricles", (4, 5, 14, 15), (43, 44, 14, 15)),
        *_sided_groups(10003, "Deep-Grey-Matter", (10, 11, 12, 13, 26, 28),
                       (49, 50, 51, 52, 58, 60)),
        *_sided_groups(10005, "Hippocampus-Amygdala", (17, 18), (53, 54)),
        *_sided_groups(10007, "Cerebellum", (7, 8), (46, 47)),
        LabelGroup(10009, "3rd-4th-Ventricle", (14, 15)),
    ),
}
"""Per label set, its groups (partial labels), for sources without its subdivisions."""

BUILTIN = {DRAWEM9.name: DRAWEM9, ASEG.name: ASEG}


def builtin_twin(labels: LabelSet) -> LabelSet | None:
    """The built-in set with ``labels``' classes (same indices and names, colours aside), if
    any: a site table or card equal to one takes its colours (reports) and its non-brain
    indices (training)."""
    return next((b for b in BUILTIN.values() if b.same_classes(labels)), None)
