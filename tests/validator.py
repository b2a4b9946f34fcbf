"""Run the real BIDS validator (bids-validator-deno, offline) on a folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Warnings the validator gives on any bids_infantseg output, and why they are left:
ACCEPTED_WARNINGS = {
    "TOO_FEW_AUTHORS",  # Authors are the study's to give, not the tool's
    "NO_AUTHORS",
    "SIDECAR_KEY_RECOMMENDED",  # the top-level desc-drawem9_dseg.tsv is taken for an image
}


def validator() -> str:
    """The validator's path; skips the calling test when it is not installed."""
    beside_python = Path(sys.executable).parent / "bids-validator-deno"
    found = shutil.which("bids-validator-deno") or (
        str(beside_python) if beside_python.is_file() else None)
    if found is None:
        pytest.skip("bids-validator-deno is not on PATH (pip install bids-validator-deno)")
    return found


def validate(folder: Path) -> tuple[list[dict], set[str]]:
    """(errors, warning codes) the validator reports on ``folder``."""
    result = subprocess.run([validator(), "--format", "json", str(folder)],
                            capture_output=True, text=True, timeout=300)
    issues = json.loads(result.stdout)["issues"]["issues"]
    errors = [i for i in issues if i["severity"] == "error"]
    return errors, {i["code"] for i in issues if i["severity"] == "warning"}
