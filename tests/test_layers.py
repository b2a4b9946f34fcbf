"""The architecture's import rules (docs/design.md), checked on the source.

Heavy or framework libraries stay in their layer, so core modules work on plain arrays and
import quickly; and package modules only import modules below them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import bids_infantseg

PACKAGE = Path(bids_infantseg.__file__).parent

# library -> folders (or modules, relative to the package) allowed to import it
CONFINED = {
    "bids": {"io/discovery.py"},  # PyBIDS
    "nipype": {"cli/", "workflows/", "interfaces/"},
    "templateflow": {"io/templates.py"},
    "SimpleITK": {"core/pose.py"},
    "torch": {"model/", "train/", "core/inference.py", "core/conform.py", "interfaces/",
              "synth/"},  # the synthetic generator's engine (synth/fields.py)
    "safetensors": {"model/card.py", "train/"},
}

# The layers, top first, one folder each (two share a floor): a module may import modules of
# its own floor and the floors below, never above; every module lives in a layer folder.
LAYERS = [
    {"cli/", "__main__.py"},  # command line, the levels' orchestration, exit statuses
    {"train/"},  # training engine, validation protocol, site and synthetic training
    {"workflows/"},  # Nipype workflows and their resource plan
    {"interfaces/"},  # Nipype interfaces around array code
    {"io/", "report/"},  # BIDS discovery, images, names and derivative files; QC reports
    {"core/", "synth/"},  # array code (the network applied included); synthetic images
    {"model/"},  # architectures, model cards, label sets
    {"utils/"},  # atomic files, locks, the error base class
]


def _matches(rel: str, patterns: set[str]) -> bool:
    return any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in patterns)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules() -> dict[str, set[str]]:
    return {p.relative_to(PACKAGE).as_posix(): _imports(p) for p in PACKAGE.rglob("*.py")}


def _layer(rel: str) -> int | None:
    return next((i for i, layer in enumerate(LAYERS) if _matches(rel, layer)), None)


def test_libraries_stay_in_their_layer():
    offenders = [
        f"{rel} imports {name}"
        for rel, names in _modules().items()
        for name in names
        for library, allowed in CONFINED.items()
        if name.split(".")[0] == library and not _matches(rel, allowed)
    ]
    assert offenders == []


def test_imports_flow_downward():
    offenders = []
    for rel, names in _modules().items():
        mine = _layer(rel)
        for name in names:
            if not name.startswith("bids_infantseg."):
                continue
            target = name.removeprefix("bids_infantseg.").replace(".", "/")
            target_rel = next((c for c in (f"{target}.py", f"{target}/__init__.py", f"{target}/")
                               if (PACKAGE / c).exists()), None)
            theirs = _layer(target_rel) if target_rel else None
            if mine is not None and theirs is not None and theirs < mine:
                offenders.append(f"{rel} (layer {mine}) imports {name} (layer {theirs})")
    assert offenders == []


def test_every_module_has_a_layer():
    unplaced = [rel for rel in _modules() if _layer(rel) is None and rel != "__init__.py"]
    assert unplaced == [], "put new modules in a layer folder (LAYERS, docs/design.md)"
