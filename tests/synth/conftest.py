"""Where the real label maps are: ``BIDS_INFANTSEG_DATA``, else the project's shared data
folder beside the checkout; tests that need them skip where neither exists (clean CI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def data_folder(name: str) -> Path:
    root = Path(os.environ.get("BIDS_INFANTSEG_DATA", SHARED)) / name
    if not root.is_dir():
        pytest.skip(f"{root} not found (set BIDS_INFANTSEG_DATA)")
    return root


@pytest.fixture(scope="session")
def atlases() -> list[Path]:
    from bids_infantseg.synth import atlas_folders

    return atlas_folders(data_folder("fetal-sb-atlas-cc0"))


@pytest.fixture(scope="session")
def aseg_root() -> Path:
    return data_folder("infant-aseg-labels")
