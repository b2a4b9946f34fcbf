"""The train level's settings: defaults, then a JSON ``--config`` file, then explicit flags.

Every training choice is one field of :class:`Settings`; the same names (with ``_`` or ``-``)
are the keys of ``--config FILE``. A flag given on the command line wins over the file, the
file over the defaults. The settings that change what is learnt go into the model card and
into the name of the run's work folder, so a killed run restarted with the same settings
resumes, and a changed one starts afresh.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from bids_infantseg.errors import InfantsegError
from bids_infantseg.model.views import VIEW_AXIS

PAPER_LR_GRID = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
"""Nine learning rates, half a decade apart from 1e-5 to 1e-1 (``--lr-grid paper``)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class SettingsError(InfantsegError, ValueError):
    """A setting that cannot be used; one line naming it."""


@dataclass(frozen=True)
class Settings:
    labels: Path | None = None
    labels_desc: str | None = None
    labels_map: str | None = None  # shipped mapping name or TSV file (model/labelmap.py)
    pretrained: str = "default"  # bundled name, model folder, or "none" (from scratch)
    views: tuple[str, ...] = ("axial", "coronal", "sagittal")
    cv: str = "loso"  # loso | kfold:K | none
    epochs_classifier: int = 15  # stage I: the new classifier alone
    epochs_all: int = 50  # stage II: every layer
    lr: float = 1e-3
    lr_grid: tuple[float, ...] | None = None  # chosen by mean cross-validated Dice
    lr_decay: float = 1.0  # learning rate multiplied by this after every epoch
    batch_size: int = 8
    max_slices_per_epoch: int | None = None
    boundary_weight: float = 2.0  # times the median class weight
    augment: bool = True
    shared_views: bool = False  # one network trained on, and serving, every view
    amp: bool = True  # mixed precision on GPUs (bf16 where supported, else fp16)
    seed: int = 0
    final: bool = True  # train and write the model on all subjects after cross-validation
    curves: bool = True  # per-epoch accuracy on the held-out subjects
    name: str | None = None  # model name (folder under OUTPUT_DIR/models)
    version: str = "1.0.0"
    weights_dtype: str = "float32"
    # from scratch only (a pretrained model fixes these):
    num_filters: int | None = None
    voxel_size_mm: float | None = None
    grid_size: int | None = None

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
        """Everything that changes what is learnt (for the card and the run's identity)."""
        out = asdict(self)
        for key in ("labels", "final", "curves", "name", "version"):
            out.pop(key)
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


def read_config(path: Path) -> dict[str, Any]:
    """A ``--config`` JSON object, keys checked and values converted."""
    try:
        content = json.loads(Path(path).read_text())
    except OSError as exc:
        raise SettingsError(f"--config {path}: cannot be read ({exc.strerror})") from exc
    except json.JSONDecodeError as exc:
        raise SettingsError(f"--config {path}: not valid JSON ({exc})") from exc
    if not isinstance(content, dict):
        raise SettingsError(f"--config {path}: must be a JSON object")
    out = {}
    for key, value in content.items():
        name = key.replace("-", "_")
        if name not in _TYPES:
            raise SettingsError(f"--config {path}: unknown setting {key!r} (known: "
                                f"{', '.join(sorted(_TYPES))})")
        out[name] = _convert(name, value)
    return out


def build(config: dict[str, Any] | None = None, flags: dict[str, Any] | None = None
          ) -> Settings:
    """Defaults, overridden by ``config`` (from the file), overridden by ``flags``."""
    values = {**(config or {}), **{k: _convert(k, v) for k, v in (flags or {}).items()}}
    settings = replace(Settings(), **values)
    check(settings)
    return settings


def check(s: Settings) -> None:
    if s.labels is None:
        raise SettingsError("the train level needs --labels DERIV_DIR (a BIDS-Derivatives "
                            "folder of _dseg label maps)")
    for key in ("epochs_classifier", "epochs_all"):
        if getattr(s, key) < 0:
            raise SettingsError(f"{key} must be 0 or more")
    if s.epochs_all + (0 if s.from_scratch else s.epochs_classifier) < 1:
        raise SettingsError("nothing to train: epochs_classifier + epochs_all is 0"
                            + (" (from scratch, only epochs_all counts)" if s.from_scratch
                               else ""))
    if s.batch_size < 1:
        raise SettingsError("batch_size must be at least 1")
    if s.max_slices_per_epoch is not None and s.max_slices_per_epoch < 1:
        raise SettingsError("max_slices_per_epoch must be at least 1")
    if not 0 < s.lr < 10:
        raise SettingsError(f"lr {s.lr}: must be > 0")
    if not 0 < s.lr_decay <= 1:
        raise SettingsError(f"lr_decay {s.lr_decay}: must be in (0, 1]")
    if s.weights_dtype not in ("float32", "float16", "bfloat16"):
        raise SettingsError("weights_dtype: float32, float16 or bfloat16")
    if s.name is not None and not _NAME.fullmatch(s.name):
        raise SettingsError(f"model name {s.name!r}: letters, digits, '.', '_', '-' only")
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
