"""Shared fixtures: a tiny model folder and small head-like BIDS datasets."""

from __future__ import annotations

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


@pytest.fixture
def head_dataset(tmp_path) -> Path:
    """sub-01 with two sessions (2 and 26 weeks), sub-02 with two runs (age in months)."""
    root = tmp_path / "bids"
    write_description(root)
    write_tsv(root / "participants.tsv", [{"participant_id": "sub-01", "sex": "F"},
                                          {"participant_id": "sub-02", "sex": "M",
                                           "age_months": "12"}])
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
