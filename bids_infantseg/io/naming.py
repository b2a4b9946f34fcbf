"""BIDS file names: entities in the specification's order, and derivative output names.

Pure string work, no PyBIDS, so writers, readers and benchmarks name and match files alike.
Output names use the project's own patterns (PyBIDS' default derivative patterns drop
``run-``, so two runs would overwrite each other).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

# Every BIDS entity as (key in file names, PyBIDS name), in the specification's order.
ENTITIES: tuple[tuple[str, str], ...] = (
    ("sub", "subject"), ("tpl", "template"), ("ses", "session"), ("cohort", "cohort"),
    ("sample", "sample"), ("task", "task"), ("tracksys", "tracksys"),
    ("acq", "acquisition"), ("nuc", "nucleus"), ("voi", "volume"), ("ce", "ceagent"),
    ("trc", "tracer"), ("stain", "staining"), ("rec", "reconstruction"),
    ("dir", "direction"), ("run", "run"), ("mod", "modality"), ("echo", "echo"),
    ("flip", "flip"), ("inv", "inv"), ("mt", "mt"), ("part", "part"), ("proc", "proc"),
    ("hemi", "hemi"), ("space", "space"), ("split", "split"), ("recording", "recording"),
    ("chunk", "chunk"), ("atlas", "atlas"), ("seg", "segmentation"), ("scale", "scale"),
    ("res", "res"), ("den", "den"), ("label", "label"), ("desc", "desc"),
)
ENTITY_NAMES = frozenset(name for _, name in ENTITIES)
"""The long (PyBIDS) names, e.g. ``acquisition``: what a filter file may select on."""

_KEY_TO_NAME = dict(ENTITIES)
_NAME_TO_KEY = {name: key for key, name in ENTITIES}
_ORDER = {name: i for i, (_, name) in enumerate(ENTITIES)}
_LABEL = re.compile(r"[0-9a-zA-Z+]+")

ENTITY_PATTERN = "_(?:" + "|".join(key for key, _ in ENTITIES) + ")-[0-9a-zA-Z+]+"
"""One ``_key-value`` pair of a file name, as a regular expression."""

DERIVED_ENTITIES = ("space", "desc", "label", "res", "den", "segmentation", "atlas")
"""Entities a derivative adds to its source's name; dropped when matching it to its source."""


def format_entities(entities: Mapping[str, str]) -> str:
    """``key-value`` pairs joined by ``_`` in BIDS order; names may be long or short keys."""
    pairs: list[tuple[int, str, str]] = []
    for name, value in entities.items():
        long_name = _KEY_TO_NAME.get(name, name)
        if long_name not in _ORDER:
            raise ValueError(f"unknown BIDS entity {name!r}")
        value = str(value)
        if not _LABEL.fullmatch(value):
            raise ValueError(f"invalid BIDS label {value!r} for entity {name!r}")
        pairs.append((_ORDER[long_name], _NAME_TO_KEY[long_name], value))
    return "_".join(f"{key}-{value}" for _, key, value in sorted(pairs))


def parse_entities(filename: str) -> dict[str, str]:
    """Entities of a BIDS file name, with long names and values exactly as written."""
    stem = filename.split(".", 1)[0]
    entities: dict[str, str] = {}
    for part in stem.split("_")[:-1]:  # the last part is the suffix
        key, sep, value = part.partition("-")
        if not sep or key not in _KEY_TO_NAME:
            raise ValueError(f"{filename}: {part!r} is not a BIDS entity")
        entities[_KEY_TO_NAME[key]] = value
    return entities


def source_entities(filename: str) -> dict[str, str]:
    """The source entities of a derivative file name (derived entities dropped)."""
    return {k: v for k, v in parse_entities(filename).items() if k not in DERIVED_ENTITIES}


def source_key(filename: str) -> str:
    """A derivative's source entities as one ``key-value_...`` string, to match it to others."""
    return format_entities(source_entities(filename))


def label_values(texts: Iterable[str]) -> list[str]:
    """BIDS label values for free text, e.g. a label's abbreviation for ``label-``: only
    letters and digits kept (``L-Hip`` -> ``LHip``), one value each, the position appended
    where that would leave a value empty or repeated."""
    values = [re.sub(r"[^0-9a-zA-Z]", "", str(text)) for text in texts]
    return [value if value and values.count(value) == 1 else f"{value}{i}"
            for i, value in enumerate(values)]


def derivative_name(source: Mapping[str, str], *, suffix: str, extension: str,
                    **entities: str) -> str:
    """Output file name: the source's entities plus ``entities``, in BIDS order.

    ``derivative_name({"subject": "01", "session": "02", "run": "1"}, suffix="dseg",
    extension=".nii.gz", space="T2w", desc="drawem9")`` ->
    ``sub-01_ses-02_run-1_space-T2w_desc-drawem9_dseg.nii.gz``.
    """
    if not _LABEL.fullmatch(suffix):
        raise ValueError(f"invalid BIDS suffix {suffix!r}")
    merged = {_KEY_TO_NAME.get(k, k): v for k, v in source.items()}
    merged.update({_KEY_TO_NAME.get(k, k): v for k, v in entities.items()})
    return f"{format_entities(merged)}_{suffix}.{extension.lstrip('.')}"


def derivative_dir(source: Mapping[str, str]) -> Path:
    """Folder of a source's outputs, relative to the output dataset: ``sub-X[/ses-Y]/anat``."""
    folder = Path(f"sub-{source['subject']}")
    if source.get("session"):
        folder /= f"ses-{source['session']}"
    return folder / "anat"
