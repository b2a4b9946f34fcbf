"""Which anatomy a training run draws from: a configured mixture of sources.

A configuration (JSON, e.g. ``configs/drawem9-synth-starter.json``) lists sources::

    {"sources": [
       {"name": "procedural", "kind": "procedural", "weight": 0.15},
       {"name": "fetal-sb-atlas", "kind": "fetal_atlas", "weight": 0.2,
        "root": "${BIDS_INFANTSEG_DATA}/fetal-sb-atlas-cc0", "held_out": ["..."]},
       {"name": "infant-aseg", "kind": "label_map", "weight": 0.65,
        "root": "${BIDS_INFANTSEG_DATA}/infant-aseg-labels", "scheme": "freesurfer-aseg",
        "files": {"1mo_aseg.nii.gz": 1.0, "...": 0}, "held_out": ["2mo_aseg.nii.gz"]}],
     "ages": {"range_months": [0, 12], "newborn_share": 0.35, "age_window_months": 9},
     "generator": "default"}

Roots may use environment variables (whose values are relative to the working directory)
and are otherwise relative to the configuration file; a source
whose root, files or variable is missing is an error naming it (never a silent fall-back to
fewer sources), and no path of a development machine is a default. ``held_out`` files and
folders never enter training; ``SourceMix.load(..., held_out=True)`` gives only them, for
validation. A label map is drawn for ages within ``age_window_months`` of its own age
(the nearest map where none is), so a newborn is not built from a three-year-old's folding.
``generator`` names the generator configuration (``config.py``: a shipped name or a file
relative to the configuration; default ``default``), recorded by ``describe`` and so in
the model card.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bids_infantseg.synth.config import (
    DEFAULT,
    DEFAULT_GENERATOR,
    GeneratorConfig,
    GeneratorConfigError,
    load_generator,
)
from bids_infantseg.synth.fetal_atlas import FetalAtlas, atlas_folders
from bids_infantseg.synth.labelmaps import LabelMap, Scheme
from bids_infantseg.synth.procedural import Procedural
from bids_infantseg.utils.errors import InfantsegError


class SourceError(InfantsegError, ValueError):
    """A source configuration that cannot be used as written."""


_VARIABLE = re.compile(r"\$\{?(\w+)\}?")


def _root(spec: dict, base: Path) -> Path:
    """A source's folder: environment variables expanded (their values relative to the
    working directory, as a user types them), the rest relative to the config's folder."""
    raw = str(spec.get("root", ""))
    unset = [v for v in _VARIABLE.findall(raw) if v not in os.environ]
    if not raw or unset:
        raise SourceError(f"source {spec.get('name')!r}: root {raw!r} needs "
                          f"{', '.join(unset) or 'a value'}")
    expanded = _VARIABLE.sub(lambda m: str(Path(os.environ[m.group(1)]).resolve()), raw)
    root = (base / expanded).resolve()
    if not root.is_dir():
        raise SourceError(f"source {spec.get('name')!r}: {root} is not a folder")
    return root


@dataclass(frozen=True)
class Source:
    """One configured source: its name, weight and anatomies (with their own ages)."""

    name: str
    kind: str
    weight: float
    anatomies: tuple
    ages: tuple[float | None, ...]

    def describe(self) -> dict:
        items = [getattr(a, "path", getattr(a, "folder", None)) for a in self.anatomies]
        return {"name": self.name, "kind": self.kind, "weight": self.weight,
                "files": [Path(p).name for p in items if p is not None]}


def _source(spec: dict, base: Path, held_out: bool) -> Source:
    kind, name = spec.get("kind"), spec.get("name", spec.get("kind"))
    weight = float(spec.get("weight", 1.0))
    if kind == "procedural":
        return Source(name, kind, weight, (Procedural(),), (None,))
    chosen = set(spec.get("held_out", ()))
    if kind == "fetal_atlas":
        root = _root(spec, base)
        every = atlas_folders(root)
        missing = chosen - {p.name for p in every}
        if missing:
            raise SourceError(f"source {name!r}: held-out atlases {sorted(missing)} not in {root}")
        folders = [p for p in every if (p.name in chosen) == held_out]
        return Source(name, kind, weight, tuple(FetalAtlas(p) for p in folders),
                      (None,) * len(folders))
    if kind == "label_map":
        root = _root(spec, base)
        scheme = Scheme.load(spec["scheme"] if "/" not in spec["scheme"]
                             else base / spec["scheme"])
        files = {str(k): float(v) for k, v in spec["files"].items()}
        missing = sorted(f for f in files if not (root / f).is_file())
        if missing or not chosen <= set(files):
            raise SourceError(f"source {name!r}: not found in {root}: "
                              f"{missing or sorted(chosen - set(files))}")
        kept = sorted((f for f in files if (f in chosen) == held_out), key=files.get)
        return Source(name, kind, weight,
                      tuple(LabelMap(root / f, scheme, files[f]) for f in kept),
                      tuple(files[f] for f in kept))
    raise SourceError(f"source {name!r}: unknown kind {kind!r} "
                      "(procedural, fetal_atlas, label_map)")


@dataclass(frozen=True)
class SourceMix:
    """Draws an anatomy and an age for each synthetic volume, as configured."""

    sources: tuple[Source, ...]
    age_range: tuple[float, float] = (0.0, 12.0)
    newborn_share: float = 0.0  # share of ages drawn in the first 1.5 months
    age_window: float = 9.0
    config: dict = field(default_factory=dict, compare=False)
    generator: GeneratorConfig = field(default=DEFAULT, compare=False)

    @classmethod
    def load(cls, path: Path, *, held_out: bool = False) -> SourceMix:
        """The training sources of a configuration file (or with ``held_out`` only the
        held-out ones; sources that hold out nothing are then left out)."""
        path = Path(path)
        config = json.loads(path.read_text())
        sources = [_source(spec, path.parent, held_out) for spec in config["sources"]]
        sources = [s for s in sources if s.anatomies and not (held_out and s.kind == "procedural")]
        if not sources:
            raise SourceError(f"{path}: no {'held-out' if held_out else 'training'} sources")
        ages = config.get("ages", {})
        try:
            generator = load_generator(config.get("generator", DEFAULT_GENERATOR), path.parent)
        except GeneratorConfigError as exc:
            raise SourceError(f"{path}: generator: {exc}") from exc
        return cls(tuple(sources), tuple(ages.get("range_months", (0.0, 12.0))),
                   float(ages.get("newborn_share", 0.0)),
                   float(ages.get("age_window_months", 9.0)), config, generator)

    def draw_age(self, rng: np.random.Generator) -> float:
        low, high = self.age_range
        if rng.uniform() < self.newborn_share:
            return float(rng.uniform(low, min(high, low + 1.5)))
        return float(rng.uniform(low, high))

    def draw(self, rng: np.random.Generator, age_months: float):
        """An anatomy for a volume of ``age_months``: a source by weight, then one of its
        anatomies (label maps within the age window)."""
        weights = np.array([s.weight for s in self.sources], dtype=float)
        source = self.sources[rng.choice(len(self.sources), p=weights / weights.sum())]
        return pick(source, rng, age_months, self.age_window)

    def describe(self) -> dict:
        return {"sources": [s.describe() for s in self.sources],
                "age_range_months": list(self.age_range), "newborn_share": self.newborn_share,
                "age_window_months": self.age_window, "generator": self.generator.record()}


def pick(source: Source, rng: np.random.Generator, age_months: float, window: float):
    """One anatomy of ``source`` suited to ``age_months``."""
    ages = np.array([np.nan if a is None else a for a in source.ages], dtype=float)
    if np.isnan(ages).all():
        return source.anatomies[rng.integers(len(source.anatomies))]
    near = np.flatnonzero(np.abs(ages - age_months) <= window)
    if not near.size:
        near = np.array([int(np.nanargmin(np.abs(ages - age_months)))])
    return source.anatomies[int(near[rng.integers(near.size)])]
