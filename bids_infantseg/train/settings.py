"""The one training configuration: defaults, then a JSON file, then explicit flags.

Every training choice, site fine-tuning or the synthetic starter alike, is one field of
:class:`Settings`, under one name: the key in a JSON file and the flag (``--`` and ``-`` for
``_``; each field's ``help`` is the flag's). :func:`add_arguments` adds the flags to the
command line's train group from these fields, so a knob is declared once. A flag given on
the command line wins over the file, the file over the defaults (:func:`config_defaults`
becomes the parser's defaults). The file is ``--config FILE``, or, for synthetic training,
the ``train`` block of the synthetic-data configuration given as the dataset. The settings
that change what is learnt go into the model card and into the name of the run's work
folder, so a killed run restarted with the same settings resumes, and a changed one starts
afresh.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bids_infantseg.utils.errors import InfantsegError

if TYPE_CHECKING:  # the command line reads settings without loading torch
    from bids_infantseg.model.card import Model, ModelCard
    from bids_infantseg.model.labels import LabelSet

PAPER_LR_GRID = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
"""Nine learning rates, half a decade apart from 1e-5 to 1e-1 (``--lr-grid paper``)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
CONFIG_BLOCK = "train"
"""The block of a synthetic-data configuration (``configs/*.json``) holding its settings."""
SITE, SYNTHETIC = "site", "synthetic"


class SettingsError(InfantsegError, ValueError):
    """A setting that cannot be used; one line naming it."""


def knob(default: Any, help: str, *, flags: tuple[str, ...] = (), metavar: str | None = None,
         common: bool = False, only: str | None = None) -> Any:
    """A setting's field: its default and flag help; ``flags`` replace the flag made of its
    name, ``common`` marks a flag the command line already has for every level, ``only``
    the kind of training (``site`` or ``synthetic``) it applies to."""
    return field(default=default, metadata={"help": help, "flags": flags, "metavar": metavar,
                                            "common": common, "only": only})


@dataclass(frozen=True)
class Settings:
    """Everything a training run is told: data, model, recipe, budget, validation."""

    # site data (a BIDS dataset with manual label maps)
    labels: Path | None = knob(None, "BIDS-Derivatives folder of _dseg label maps on the T2w "
                               "grids, with their dseg.tsv lookup table (or BIDS_DIR itself)",
                               metavar="DERIV_DIR", only=SITE)
    labels_desc: str | None = knob(None, "use only label maps with desc-D (e.g. drawem9 in "
                                   "the dHCP release)", metavar="D", only=SITE)
    labels_map: str | None = knob(None, "map the label maps' values onto a built-in label set: "
                                  "a shipped mapping (aseg-to-drawem9) or a "
                                  "<source>-to-<target>.tsv file", metavar="NAME|FILE",
                                  only=SITE)
    cv: str = knob("loso", "cross-validation by subject: loso | kfold:K | none", only=SITE)
    lr_grid: tuple[float, ...] | None = knob(
        None, "cross-validate several rates and keep the best by Dice; 'paper': nine rates "
        "1e-5, 3e-5, ..., 1e-1", metavar="paper|R,R,...", only=SITE)
    max_slices_per_epoch: int | None = knob(None, "draw N slices per epoch instead of all",
                                            metavar="N", only=SITE)
    augment: bool = knob(True, "intensity and spatial augmentation of site slices", only=SITE)
    final: bool = knob(True, "train and write the model on all subjects after "
                       "cross-validation", only=SITE)
    curves: bool = knob(True, "per-epoch accuracy on the held-out subjects", only=SITE)
    # synthetic data (the data argument is a synthetic-data configuration)
    label_set: str | None = knob(None, "labels the synthetic model outputs (default drawem9)",
                                 common=True, only=SYNTHETIC)
    steps_per_epoch: int = knob(60, "steps per epoch, each one batch of every view",
                                metavar="N", only=SYNTHETIC)
    skull_strip: float = knob(0.5, "share of synthetic volumes skull-stripped", only=SYNTHETIC)
    eval_procedural: int = knob(2, "procedural held-out volumes per age", metavar="N",
                                only=SYNTHETIC)
    # the model
    pretrained: str = knob("default", "model to start from: a bundled name, a model folder, or "
                           "none (from scratch); default: the bundled model (a derived "
                           "model: its network)",
                           metavar="NAME|PATH|none")
    views: tuple[str, ...] = knob(("axial", "coronal", "sagittal"), "views to train",
                                  metavar="V[,V...]")
    shared_views: bool = knob(False, "one network trained on, and serving, every view")
    model_name: str | None = knob(None, "model name (folder under OUTPUT_DIR/models); "
                                  "default <labels>-from-<pretrained>, <labels>-scratch, or "
                                  "for synthetic training <label set>-synth-starter",
                                  metavar="NAME")
    model_version: str = knob("1.0.0", "version written to the card", metavar="VERSION")
    weights_dtype: str = knob("float32", "dtype of the shipped weights: float32, float16, "
                              "bfloat16")
    num_filters: int | None = knob(None, "filters per layer (from scratch only)", metavar="N")
    voxel_size_mm: float | None = knob(None, "model grid voxel size (from scratch only)")
    grid_size: int | None = knob(None, "model grid side, a multiple of 16 (from scratch only)",
                                 metavar="N")
    # the recipe
    epochs_classifier: int = knob(15, "stage I epochs: a new classifier alone", metavar="N")
    epochs_all: int = knob(50, "stage II epochs: every layer", metavar="N")
    lr: float = knob(1e-3, "Adam learning rate", metavar="RATE")
    lr_decay: float = knob(1.0, "learning rate multiplied by this after every epoch")
    batch_size: int = knob(8, "slices per step and process", common=True)
    boundary_weight: float = knob(2.0, "boundary weight, times the median class weight")
    class_weight_cap: float | None = knob(None, "largest class weight (median frequency); "
                                          "default: none")
    amp: bool = knob(True, "mixed precision on GPUs (bf16 where supported, else fp16)")
    seed: int = knob(0, "seed of every random draw", metavar="N")
    # budget, checkpoints, validation
    minutes: float | None = knob(None, "wall-clock budget of the whole run, evaluation "
                                 "included (synthetic training)", only=SYNTHETIC)
    eval_minutes: float = knob(5.0, "part of --minutes kept for the held-out evaluation",
                               only=SYNTHETIC)
    compact_checkpoints: bool = knob(False, "checkpoints with float16 weights and bfloat16 "
                                     "Adam moments (small enough to commit; a resumed run is "
                                     "then close to, not identical with, an uninterrupted one)")
    scorer: str | None = knob(None, "validation: 'protocol' (docs/validation.md; synthetic "
                              "training, its held-out maps from the configuration) or "
                              "MODULE:FUNCTION called with a checkpoint's model, returning "
                              "(score, table); the best-scored checkpoint ships instead of the "
                              "last epoch", metavar="protocol|MODULE:FUNCTION")
    score_every: int = knob(1, "epochs between scored checkpoints (the protocol costs minutes "
                            "on a CPU); a unit's last epoch is always scored")

    @property
    def from_scratch(self) -> bool:
        return self.pretrained.lower() == "none"

    @property
    def learning_rates(self) -> tuple[float, ...]:
        return self.lr_grid or (self.lr,)

    @property
    def cv_scheme(self) -> tuple[str, int | None]:
        return parse_cv(self.cv)

    def recipe(self) -> dict[str, Any]:
        """Everything that changes what site training learns (for the card and the run's
        identity); synthetic training's own settings left out."""
        out = asdict(self)
        for key in ("labels", "final", "curves", "model_name", "model_version"):
            out.pop(key)
        for spec in fields(self):
            if spec.metadata["only"] == SYNTHETIC:
                out.pop(spec.name)
        out["views"] = list(self.views)
        out["lr_grid"] = list(self.lr_grid) if self.lr_grid else None
        return out


def parse_cv(text: str) -> tuple[str, int | None]:
    """``loso`` | ``kfold:K`` (K >= 2) | ``none``."""
    value = str(text).strip().lower()
    if value in ("loso", "none"):
        return value, None
    match = re.fullmatch(r"k-?fold:(\d+)", value)
    if match and int(match.group(1)) >= 2:
        return "kfold", int(match.group(1))
    raise SettingsError(f"cv {text!r}: use loso, kfold:K (K >= 2) or none")


def parse_views(value: Any) -> tuple[str, ...]:
    from bids_infantseg.model.views import VIEW_AXIS  # torch: not at the command line's start

    items = value.split(",") if isinstance(value, str) else list(value)
    views = tuple(v.strip().lower() for v in items if str(v).strip())
    unknown = sorted(set(views) - set(VIEW_AXIS))
    if not views or unknown or len(set(views)) != len(views):
        raise SettingsError(f"views {value!r}: a list of distinct views among "
                            f"{', '.join(sorted(VIEW_AXIS))}")
    return views


def parse_lr_grid(value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip().lower() == "paper":
            return PAPER_LR_GRID
        value = [v for v in value.split(",") if v.strip()]
    try:
        grid = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"lr_grid {value!r}: 'paper' or a list of numbers") from exc
    if not grid or any(not 0 < v < 10 for v in grid):
        raise SettingsError(f"lr_grid {value!r}: learning rates must be > 0")
    return tuple(sorted(set(grid)))


_TYPES = {f.name: f.type for f in fields(Settings)}


def _convert(key: str, value: Any) -> Any:
    if key == "views":
        return parse_views(value)
    if key == "lr_grid":
        return parse_lr_grid(value)
    if key == "cv":
        parse_cv(value)
        return str(value).strip().lower()
    if value is None:
        return None
    kind = _TYPES[key]
    try:
        if "bool" in kind:
            if not isinstance(value, bool):
                raise TypeError
            return value
        if "int" in kind and "float" not in kind:
            if isinstance(value, bool) or int(value) != float(value):
                raise TypeError
            return int(value)
        if "float" in kind:
            return float(value)
        if "Path" in kind:
            return Path(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{key} = {value!r}: expected {kind}") from exc


def is_synthetic(data: Path) -> bool:
    """Whether the data argument is a synthetic-data configuration (a JSON file), not a
    BIDS dataset."""
    return Path(data).suffix.lower() == ".json" and Path(data).is_file()


def read_config(path: Path) -> dict[str, Any]:
    """The settings of a JSON file, keys checked and values converted: the whole object, or
    for a synthetic-data configuration (it has ``sources``) its ``train`` block."""
    try:
        content = json.loads(Path(path).read_text())
    except OSError as exc:
        raise SettingsError(f"{path}: cannot be read ({exc.strerror})") from exc
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{path}: not valid JSON ({exc})") from exc
    if isinstance(content, dict) and "sources" in content:
        content = content.get(CONFIG_BLOCK, {})
        where = f"{path} ({CONFIG_BLOCK} block)"
    else:
        where = str(path)
    if not isinstance(content, dict):
        raise SettingsError(f"{where}: must be a JSON object")
    out = {}
    for key, value in content.items():
        name = key.replace("-", "_")
        if name not in _TYPES:
            raise SettingsError(f"{where}: unknown setting {key!r} (known: "
                                f"{', '.join(sorted(_TYPES))})")
        out[name] = _convert(name, value)
    return out


def config_defaults(data: Path, config: Path | None) -> dict[str, Any]:
    """The settings files of a command: a synthetic-data configuration's ``train`` block,
    then ``--config`` over it; what the command line's parser takes as its defaults."""
    out = read_config(data) if is_synthetic(data) else {}
    return {**out, **(read_config(config) if config else {})}


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """One flag per setting (those the command line has for every level excepted), with no
    default of its own: a flag not given leaves the file's value or the setting's default."""
    for spec in fields(Settings):
        meta = spec.metadata
        if meta["common"]:
            continue
        flags = meta["flags"] or (f"--{spec.name.replace('_', '-')}",)
        kind = _TYPES[spec.name]
        options: dict[str, Any] = {"dest": spec.name, "default": None, "help": meta["help"]}
        if kind == "bool":
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["metavar"] = meta["metavar"] or spec.name.upper()
        group.add_argument(*flags, **options)


def from_args(args: argparse.Namespace, kind: str) -> Settings:
    """The settings of parsed arguments (the files already the parser's defaults)."""
    given = {spec.name: getattr(args, spec.name) for spec in fields(Settings)
             if getattr(args, spec.name, None) is not None}
    return build(flags=given, kind=kind)


def build(config: dict[str, Any] | None = None, flags: dict[str, Any] | None = None,
          kind: str = SITE) -> Settings:
    """Defaults, overridden by ``config`` (from the file), overridden by ``flags``."""
    values = {**(config or {}), **{k: _convert(k, v) for k, v in (flags or {}).items()}}
    settings = replace(Settings(), **values)
    check(settings, kind)
    return settings


def check(s: Settings, kind: str = SITE) -> None:
    for spec in fields(Settings):
        only = spec.metadata["only"]
        if only and only != kind and getattr(s, spec.name) != spec.default:
            raise SettingsError(f"{spec.name} applies only to {only} training (this is "
                                f"{kind} training)")
    if kind == SITE and s.labels is None:
        raise SettingsError("the train level needs --labels DERIV_DIR (a BIDS-Derivatives "
                            "folder of _dseg label maps)")
    for key in ("epochs_classifier", "epochs_all"):
        if getattr(s, key) < 0:
            raise SettingsError(f"{key} must be 0 or more")
    if s.epochs_all + (0 if s.from_scratch else s.epochs_classifier) < 1:
        raise SettingsError("nothing to train: epochs_classifier + epochs_all is 0"
                            + (" (from scratch, only epochs_all counts)" if s.from_scratch
                               else ""))
    for key in ("batch_size", "max_slices_per_epoch", "steps_per_epoch"):
        if getattr(s, key) is not None and getattr(s, key) < 1:
            raise SettingsError(f"{key} must be at least 1")
    if not 0 < s.lr < 10:
        raise SettingsError(f"lr {s.lr}: must be > 0")
    if not 0 < s.lr_decay <= 1:
        raise SettingsError(f"lr_decay {s.lr_decay}: must be in (0, 1]")
    if not 0 <= s.skull_strip <= 1:
        raise SettingsError(f"skull_strip {s.skull_strip}: must be in [0, 1]")
    if s.minutes is not None and not 0 <= s.eval_minutes < s.minutes:
        raise SettingsError(f"minutes {s.minutes:g}: must exceed eval_minutes "
                            f"({s.eval_minutes:g})")
    if s.weights_dtype not in ("float32", "float16", "bfloat16"):
        raise SettingsError("weights_dtype: float32, float16 or bfloat16")
    if s.model_name is not None and not _NAME.fullmatch(s.model_name):
        raise SettingsError(f"model name {s.model_name!r}: letters, digits, '.', '_', '-' "
                            "only")
    if not s.from_scratch and any(v is not None for v in
                                  (s.num_filters, s.voxel_size_mm, s.grid_size)):
        raise SettingsError("num_filters, voxel_size_mm and grid_size apply only with "
                            "--pretrained none (a pretrained model fixes them)")
    if s.grid_size is not None and (s.grid_size < 16 or s.grid_size % 16):
        raise SettingsError("grid_size must be a multiple of 16")
    if s.cv_scheme[0] == "none" and s.lr_grid and len(s.lr_grid) > 1:
        raise SettingsError("lr_grid needs cross-validation to choose a rate (cv is none)")
    if s.cv_scheme[0] == "none" and not s.final:
        raise SettingsError("cv none without the final model trains nothing")


PROTOCOL = "protocol"  # the scorer of docs/validation.md, built by the synthetic trainer


def load_scorer(name: str | None) -> Callable | None:
    """The validation scorer ``MODULE:FUNCTION`` (``None``: none; ``protocol``: ``None`` here,
    since the protocol needs the synthetic configuration and work folder to be built)."""
    if name is None or name == PROTOCOL:
        return None
    module, _, function = name.partition(":")
    try:
        scorer = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError, ValueError) as exc:
        raise SettingsError(f"scorer {name!r}: cannot be imported ({exc})") from exc
    if not callable(scorer):
        raise SettingsError(f"scorer {name!r}: not a function")
    return scorer


def target_card(settings: Settings, labels: LabelSet, pretrained: Model | None,
                name: str) -> ModelCard:
    """The new model's card: the pretrained model's grid and architecture (a new classifier
    when the labels differ), or, from scratch, the bundled model's unless set otherwise."""
    from bids_infantseg.model.architectures import architecture_of
    from bids_infantseg.model.card import DEFAULT_MODEL, ModelCard, read_card, resolve_model_path

    base = pretrained.card if pretrained else read_card(resolve_model_path(DEFAULT_MODEL))
    missing = [v for v in settings.views if v not in base.views]
    if pretrained and missing:
        raise SettingsError(f"--pretrained {settings.pretrained} has no {', '.join(missing)} "
                            f"network (its views: {', '.join(base.views)})")
    arch = replace(base.architecture, num_classes=len(labels))
    if pretrained is None and settings.num_filters:
        arch = architecture_of(arch).with_width(arch, settings.num_filters)
    grid = settings.grid_size
    return ModelCard(
        name=name, version=settings.model_version, architecture=arch, labels=labels,
        voxel_size_mm=settings.voxel_size_mm or base.voxel_size_mm,
        grid_shape=(grid, grid, grid) if grid else base.grid_shape,
        views={v: base.views.get(v, 1.0) for v in settings.views},
        intensity=base.intensity, weights_dtype=settings.weights_dtype)
