"""The generator's settings as data: one JSON file holds every randomisation range, the
generation classes and their T2 contrast curves over the first year.

Why: a range edited in code silently changed what a model was trained on. Now the settings
are a file (``data/synth/generators/default.json``, or any file a training configuration
names under ``"generator"``), loaded into frozen, typed dataclasses; the model card records
the file's name, its digest (sha256 of the canonical JSON) and its content. A bad file is
one error naming the file and the key.
"""

from __future__ import annotations

import hashlib
import json
import typing
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path

import numpy as np

from bids_infantseg.utils.errors import InfantsegError

GENERATORS = Path(__file__).resolve().parents[1] / "data" / "synth" / "generators"
"""Folder of the shipped generator configurations."""
DEFAULT_GENERATOR = "default"
FORMAT = "bids_infantseg-generator/1"


class GeneratorConfigError(InfantsegError, ValueError):
    """A generator configuration that cannot be used as written."""


Range = tuple[float, float]
"""``[low, high]``, drawn uniformly."""
Curve = tuple[tuple[float, float], ...]
"""Knots ``[[months, value], ...]``: linear in between, constant beyond the ends."""


def draw(rng: np.random.Generator, bounds: Range) -> float:
    """A uniform draw within ``bounds``."""
    return float(rng.uniform(bounds[0], bounds[1]))


def at(curve: Curve, months: float) -> float:
    """A curve's value at an age."""
    knots = np.asarray(curve, dtype=float)
    return float(np.interp(months, knots[:, 0], knots[:, 1]))


@dataclass(frozen=True)
class GenClass:
    """One tissue: its name, DrawEM9 output label, whether a skull-strip keeps it, its aseg
    output where a source says no more than the class (a FreeSurfer name without its side,
    or a partial label group: a fetal atlas does not tell thalamus from putamen), and its mean
    T2w intensity by age (CSF ~1)."""

    name: str
    drawem9: int
    intracranial: bool
    aseg: str
    t2: Curve


@dataclass(frozen=True)
class Image:
    """How an image is painted from labels (``image.synthesize_image``)."""

    age_jitter_months: float  # the contrast's age drawn within +- this of the volume's age
    mean_jitter_sd: float  # per-class mean jitter around the curve
    random_contrast_probability: float  # SynthSeg-style: every mean uniform in [0, 1]
    texture_sd: Range  # within-class standard deviation
    texture_scale_mm: Range
    blur_sigma_voxels: Range  # partial volume, per axis
    thick_slice_probability: float  # one axis blurred as a thick-slice acquisition
    thick_slice_sigma_mm: Range
    blur_truncate: float
    bias_scale_mm: Range
    bias_strength: Range  # log-amplitude of the bias field
    gamma_log_sd: float
    noise_sd: Range  # Rician noise, relative to the image maximum


@dataclass(frozen=True)
class PoseRange:
    rotation_deg: float  # up to +- this about each axis
    shift_mm: float  # up to +- this along each axis
    deform_mm: float  # amplitude of the smooth deformation


@dataclass(frozen=True)
class Pose:
    """Random pose, scale and deformation of a head: for training volumes and for phantoms."""

    training: PoseRange
    phantom: PoseRange
    scale_sd: float  # per-axis scale ~ N(1, scale_sd)
    deform_scale_mm: float


@dataclass(frozen=True)
class Head:
    """The shells painted around a brain (``head.paint_head``)."""

    csf_mm: Range  # extra-axial CSF
    csf_noise_mm: float
    shell_noise_scale_mm: float
    skull_mm: Range
    skull_growth_mm_per_year: float
    fat_mm: Range
    scalp_mm: Range
    scalp_noise_mm: float
    eye_radius_mm: Curve
    eye_radius_jitter: Range


@dataclass(frozen=True)
class SkullStrip:
    """Where a simulated brain extraction puts its edge (``synth.skull_strip``)."""

    max_margin_mm: float  # outside the brain and its CSF
    max_cut_mm: float  # into the CSF
    random_edge_probability: float  # else the edge hugs the surface
    edge_noise_scale_mm: float


@dataclass(frozen=True)
class BrainVolume:
    """Typical brain volume by age: fast growth over the first year, then slower."""

    birth_ml: float
    at_12_months_ml: float
    time_constant_months: float
    growth_until_months: float

    def ml(self, age_months: float) -> float:
        t = float(np.clip(age_months, 0.0, self.growth_until_months))
        tau = self.time_constant_months
        return self.birth_ml + (self.at_12_months_ml - self.birth_ml) * (
            1.0 - np.exp(-t / tau)) / (1.0 - np.exp(-12.0 / tau))


@dataclass(frozen=True)
class Fields:
    """Shape of the random fields (``fields.py``)."""

    smooth_sigma_per_scale: float
    smooth_truncate: float
    separable_terms: int


@dataclass(frozen=True)
class GeneratorConfig:
    """A whole generator configuration; ``file`` names where it came from."""

    file: str
    description: tuple[str, ...]
    classes: tuple[GenClass, ...]
    image: Image
    pose: Pose
    head: Head
    skull_strip: SkullStrip
    brain_volume: BrainVolume
    fields: Fields
    content: str  # the canonical JSON, what the digest is of

    def as_dict(self) -> dict:
        """The configuration as read (JSON types)."""
        return json.loads(self.content)

    def digest(self) -> str:
        """sha256 of the canonical JSON (sorted keys, no whitespace)."""
        return hashlib.sha256(self.content.encode()).hexdigest()

    def record(self) -> dict:
        """What a model card keeps: the file's name, the digest and the content."""
        return {"file": Path(self.file).name, "sha256": self.digest(),
                "config": self.as_dict()}

    def contrast_centres(self, age_months: float) -> np.ndarray:
        """Mean T2w intensity per generation class at an age (float32, CSF ~1)."""
        return np.array([at(c.t2, age_months) for c in self.classes], dtype=np.float32)


def _convert(value, kind, key: str):
    """``value`` as the annotated type ``kind``; an error naming ``key`` otherwise."""
    origin = typing.get_origin(kind)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise GeneratorConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if kind in (int, bool, str):
        if type(value) is not kind:
            raise GeneratorConfigError(f"{key}: expected {kind.__name__}, got {value!r}")
        return value
    if origin is tuple:
        args = typing.get_args(kind)
        if not isinstance(value, list):
            raise GeneratorConfigError(f"{key}: expected a list, got {value!r}")
        if args[-1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise GeneratorConfigError(f"{key}: expected {len(args)} values, got {value!r}")
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in
                     enumerate(zip(value, args, strict=True)))
    if isinstance(kind, type) and hasattr(kind, "__dataclass_fields__"):
        return _build(kind, value, key)
    raise TypeError(f"unsupported setting type {kind!r}")  # a bug here, not in the file


def _build(cls: type, data, key: str, **given):
    """A dataclass from a JSON object whose keys are exactly its fields (but ``given``)."""
    if not isinstance(data, dict):
        raise GeneratorConfigError(f"{key or 'top level'}: expected an object")
    hints = typing.get_type_hints(cls, globalns=globals())
    names = [f.name for f in fields(cls) if f.name not in given]
    unknown = sorted(set(data) - set(names))
    missing = [n for n in names if n not in data]
    if unknown or missing:
        raise GeneratorConfigError(
            f"{key or 'top level'}: " + "; ".join(
                ([f"unknown key(s) {', '.join(unknown)}"] if unknown else [])
                + ([f"missing key(s) {', '.join(missing)}"] if missing else [])))
    prefix = f"{key}." if key else ""
    return cls(**given, **{n: _convert(data[n], hints[n], prefix + n) for n in names})


def _check(config: GeneratorConfig) -> None:
    """Values in range: ranges ordered, probabilities in [0, 1], curves ascending in age."""
    def walk(obj, key: str):
        if isinstance(obj, tuple) and obj and isinstance(obj[0], GenClass):
            for i, c in enumerate(obj):
                yield from walk(c, f"{key}[{i}]")
        elif hasattr(obj, "__dataclass_fields__"):
            for f in fields(obj):
                yield from walk(getattr(obj, f.name), f"{key}.{f.name}".lstrip("."))
        else:
            yield key, obj

    for key, value in walk(config, ""):
        name = key.rsplit(".", 1)[-1]
        if key in ("file", "content", "description") or isinstance(value, str | bool):
            continue
        if name == "t2" or name == "eye_radius_mm":
            months = [k[0] for k in value]
            if not value or months != sorted(set(months)):
                raise GeneratorConfigError(f"{key}: knots must be given in increasing age")
            if name == "t2" and not all(0.0 <= k[1] <= 1.0 for k in value):
                raise GeneratorConfigError(f"{key}: T2 means must lie in [0, 1]")
        elif isinstance(value, tuple):
            if value[0] > value[1] or value[0] < 0:
                raise GeneratorConfigError(f"{key}: expected 0 <= low <= high, got "
                                           f"{list(value)}")
        elif name.endswith("probability") and not 0.0 <= value <= 1.0:
            raise GeneratorConfigError(f"{key}: a probability must lie in [0, 1]")
        elif isinstance(value, int | float) and value < 0:
            raise GeneratorConfigError(f"{key}: must not be negative")


def resolve(name_or_path: str | Path, base: Path | None = None) -> Path:
    """A shipped configuration by name (``default``), or a file (relative to ``base``)."""
    path = Path(name_or_path)
    if base is not None and not path.is_absolute():
        path = base / path
    if path.suffix == ".json" and path.is_file():
        return path
    shipped = GENERATORS / f"{name_or_path}.json"
    if shipped.is_file():
        return shipped
    raise GeneratorConfigError(
        f"{name_or_path}: no such generator configuration file, and not a shipped one "
        f"({', '.join(sorted(p.stem for p in GENERATORS.glob('*.json')))})")


@lru_cache(maxsize=16)
def _load(path: str) -> GeneratorConfig:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise GeneratorConfigError(f"{path}: {exc}") from exc
    try:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise GeneratorConfigError(f"format: expected {FORMAT!r}")
        body = {k: v for k, v in data.items() if k != "format"}
        description = body.get("description", [])
        body["description"] = [description] if isinstance(description, str) else description
        content = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        config = _build(GeneratorConfig, body, "", file=str(path), content=content)
        _check(config)
        if _default_table is not None and _table(config) != _default_table:
            raise GeneratorConfigError(
                "classes: names, order and outputs (drawem9, aseg, intracranial) must be "
                f"those of {GENERATORS / 'default.json'}; only the t2 curves may differ")
    except GeneratorConfigError as exc:
        raise GeneratorConfigError(f"{path}: {exc}") from exc
    return config


def _table(config: GeneratorConfig) -> tuple:
    """The class table that label outputs depend on (everything but the T2 curves)."""
    return tuple((c.name, c.drawem9, c.intracranial, c.aseg) for c in config.classes)


_default_table: tuple | None = None


def load_generator(name_or_path: str | Path = DEFAULT_GENERATOR,
                   base: Path | None = None) -> GeneratorConfig:
    """A generator configuration: shipped by name, or a file (relative to ``base``)."""
    return _load(str(resolve(name_or_path, base).resolve()))


DEFAULT: GeneratorConfig = load_generator()
"""The shipped default, which every function uses unless given another."""
_default_table = _table(DEFAULT)


def default_if_none(config: GeneratorConfig | None) -> GeneratorConfig:
    return DEFAULT if config is None else config


__all__ = ["DEFAULT", "GeneratorConfig", "GeneratorConfigError", "at", "draw",
           "load_generator"]
