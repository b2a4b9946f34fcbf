"""Skipped tests say why in pytest's summary (``-rs`` in the project's addopts): a machine
without Chromium must not pass the report-rendering tests silently."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.report.pages import NO_CHROMIUM

ROOT = Path(__file__).resolve().parents[1]


def test_a_rendering_test_skipped_without_chromium_says_why_in_the_summary(tmp_path):
    test = "tests/report/test_scan.py::test_scan_report_images_load_in_chromium"
    bare = tmp_path / "bin"  # a PATH where no chromium is found
    bare.mkdir()
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          test], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PATH": str(bare)})
    assert run.returncode == 0, run.stdout + run.stderr
    summary = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED [1]")]
    assert len(summary) == 1 and summary[0].endswith(f": {NO_CHROMIUM}"), run.stdout
