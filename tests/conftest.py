"""Shared fixtures: a tiny model folder, small head-like BIDS datasets, and one finished
study that the tests reading participant outputs share (the pipeline runs once a session)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.bids_factory import write_description, write_json, write_tsv
from tests.model_factory import make_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


def head_image(shape=(48, 56, 44), zooms=(3.0, 3.0, 3.0), seed: int = 0) -> np.ndarray:
    """An asymmetric ellipsoidal 'head': bright shell, darker core, a blob on the left."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[(np.arange(n) - n / 2 + 0.5) * z for n, z in
                                  zip(shape, zooms, strict=True)], indexing="ij"))
    r = np.sqrt((grid[0] / 60) ** 2 + (grid[1] / 75) ** 2 + (grid[2] / 55) ** 2)
    data = np.where(r < 1.0, 300.0, 0.0) + np.where(r < 0.8, 300.0, 0.0)
    blob = np.sqrt((grid[0] + 25) ** 2 + (grid[1] - 10) ** 2 + grid[2] ** 2) < 15
    data[blob] = 1000.0
    return (data + rng.normal(0, 10, shape) * (r < 1.0)).astype(np.float32)


def write_head(path: Path, affine: np.ndarray | None = None, seed: int = 0, **kwargs) -> Path:
    data = head_image(seed=seed, **kwargs)
    zooms = kwargs.get("zooms", (3.0, 3.0, 3.0))
    if affine is None:
        affine = np.diag([*zooms, 1.0])
        affine[:3, 3] = -np.array(data.shape) * np.array(zooms) / 2
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return path


def t2w_path(root: Path, subject: str, session: str | None = None, **entities: str) -> Path:
    folder = root / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
    parts = [f"sub-{subject}"] + ([f"ses-{session}"] if session else [])
    parts += [f"{k}-{v}" for k, v in entities.items()]
    return folder / ("_".join(parts) + "_T2w.nii.gz")


def write_head_dataset(root: Path, *, sub_03: bool = False) -> Path:
    """sub-01 with two sessions (2 and 26 weeks), sub-02 with two runs (age in months);
    ``sub_03``: a participant in participants.tsv without any image."""
    write_description(root)
    write_tsv(root / "participants.tsv", [{"participant_id": "sub-01", "sex": "F"},
                                          {"participant_id": "sub-02", "sex": "M",
                                           "age_months": "12"}]
              + ([{"participant_id": "sub-03", "sex": "F"}] if sub_03 else []))
    write_tsv(root / "sub-01" / "sub-01_sessions.tsv",
              [{"session_id": "ses-01", "age_weeks": "2"},
               {"session_id": "ses-02", "age_weeks": "26"}])
    write_head(t2w_path(root, "01", "01"), seed=1)
    write_head(t2w_path(root, "01", "02"), seed=2)
    write_head(t2w_path(root, "02", run="1"), seed=3)
    write_head(t2w_path(root, "02", run="2"), seed=4)
    for path in root.rglob("*_T2w.nii.gz"):
        write_json(path.with_name(path.name.replace(".nii.gz", ".json")), {"EchoTime": 0.15})
    return root


@pytest.fixture
def head_dataset(tmp_path) -> Path:
    """sub-01 with two sessions (2 and 26 weeks), sub-02 with two runs (age in months)."""
    return write_head_dataset(tmp_path / "bids")


@dataclass(frozen=True)
class FinishedRun:
    """A participant run done in its own process, as a user runs it: outputs, log, status."""

    out: Path
    log: str
    status: int


@dataclass(frozen=True)
class FinishedStudy:
    """The head dataset (and sub-03 without images) segmented by the participant level."""

    bids: Path
    together: FinishedRun
    apart: dict[str, FinishedRun]


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory, tiny_model_dir) -> FinishedStudy:
    """One finished study for every test that only reads participant outputs (copy what you
    change). Three runs at the same time, in their own processes as users start them:

    - ``together``: all four scans in one run, ``--plugin MultiProc`` with ``n_procs`` 2;
    - ``apart["01"]`` and ``apart["02"]``: one run per participant on one output folder with
      the default work folder (two terminals or a SLURM array); sub-01's runs its 2 scans at
      once (MultiProc) with ``-vv``, sub-02's one at a time (Linear).

    All with the tiny model, ``--write-probseg`` and ``--mc-samples 2``.
    """
    root = tmp_path_factory.mktemp("finished")
    bids = write_head_dataset(root / "bids", sub_03=True)
    common = ["--model", str(tiny_model_dir), "--device", "cpu", "--omp-nthreads", "1",
              "--write-probseg", "--mc-samples", "2"]
    runs = {
        "together": (root / "together", [*common, "-w", str(root / "work"), "--plugin",
                                         "MultiProc", "--plugin-args", '{"n_procs": 2}']),
        "01": (root / "apart", [*common, "--participant-label", "01", "--nprocs", "2", "-vv"]),
        "02": (root / "apart", [*common, "--participant-label", "02", "--nprocs", "1"]),
    }
    procs = {name: subprocess.Popen([sys.executable, "-m", "bids_infantseg", str(bids),
                                     str(out), "participant", *args],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name, (out, args) in runs.items()}
    done = {}
    for name, proc in procs.items():
        log = proc.communicate(timeout=900)[0]
        done[name] = FinishedRun(runs[name][0], log, proc.returncode)
    together = done.pop("together")
    return FinishedStudy(bids, together, done)
