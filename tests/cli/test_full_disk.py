"""A disk that fills up in the middle of a run: FAILED lines and exit 1, not Nipype's report of
it (~40 lines, every traceback twice) and not a crash."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cli.test_interrupts import Run
from tests.cli.test_participant import one_scan_dataset, outputs
from tests.conftest import write_head_dataset

NO_SPACE_IN_SEGMENT = """
import errno, os, sys
from bids_infantseg.interfaces import segmentation as interfaces

def full(path, probs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

interfaces.save_probabilities = full

if __name__ == "__main__":
    from bids_infantseg.cli.main import main
    sys.exit(main())
"""
"""bids_infantseg whose segment step finds the disk full when it saves its result."""


@pytest.mark.parametrize("verbose", [False, True], ids=["default", "-v"])
def test_a_failing_write_is_one_failed_line_without_nipype_unless_verbose(
        tmp_path, tiny_model_dir, verbose):
    root, out = one_scan_dataset(tmp_path / "bids"), tmp_path / "out"
    script = tmp_path / "full.py"
    script.write_text(NO_SPACE_IN_SEGMENT)
    run = Run(tmp_path / "run", script, str(root), str(out), "participant", "--model",
              str(tiny_model_dir), "--device", "cpu", "--nprocs", "1",
              *(["-v"] if verbose else []))
    assert run.wait(300) == 1
    stdout, stderr = run.output()
    nipype = stdout + stderr
    if verbose:  # Nipype's report, traceback included, for whoever asks
        assert "nipype.workflow" in nipype and "Traceback" in nipype
    else:
        assert "nipype" not in nipype and "Traceback" not in nipype, nipype
    failed = [line for line in stderr.splitlines() if " FAILED " in line]
    assert len(failed) == 1 and "segment step failed: [Errno 28] No space left on device" \
        in failed[0], stderr
    if not verbose:
        assert stderr.splitlines()[-1] == failed[0], stderr
        assert stderr.splitlines()[-2].endswith(f"0 of 1 scan(s) segmented; outputs in {out}")


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 1 MiB tmpfs: room for the checks and the first steps, not for a whole run."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_disk_that_fills_up_fails_the_scans_in_one_line_each(tmp_path, tiny_model_dir,
                                                             small_disk):
    """A real full file system. Before: ~40 lines of Nipype's report with its tracebacks,
    or, when the segment step stored its probabilities in a memory map, a crash ("Fatal
    Python error: Bus error", exit 135)."""
    root = write_head_dataset(tmp_path / "bids")
    out = small_disk / "out"
    run = Run(tmp_path / "run", None, str(root), str(out), "participant", "--model",
              str(tiny_model_dir), "--device", "cpu", "--nprocs", "1",
              "--participant-label", "02")
    assert run.wait(300) == 1, run.output()
    stdout, stderr = run.output()
    assert stdout == "" and "Traceback" not in stderr and "nipype" not in stderr, stderr
    lines = stderr.splitlines()
    assert [line for line in lines if " FAILED " in line], stderr
    assert lines[-1].endswith(f"ERROR: the file system of {out} is full (0 KiB free): make "
                              "room, then rerun the same command"), stderr
    assert not outputs(out, "sub-02_run-2", "sub-02/anat")["dseg"].exists()
