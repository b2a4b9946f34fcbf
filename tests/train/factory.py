"""Tiny labelled BIDS datasets for the train level: head phantoms and their label maps."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from tests.bids_factory import write_description, write_json, write_tsv
from tests.conftest import head_image

ZOOMS = (3.0, 3.0, 3.0)
TABLE = "index\tname\tabbreviation\n0\tOutside\tOUT\n1\tShell\tSH\n2\tCore\tCO\n3\tBlob\tBL\n"


def head_labels(image: np.ndarray) -> np.ndarray:
    """0 outside, 1 the bright shell, 2 the darker core, 3 the blob (from the phantom)."""
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[image > 150] = 1
    labels[image > 450] = 2
    labels[image > 800] = 3
    return labels


def _affine(shape) -> np.ndarray:
    affine = np.diag([*ZOOMS, 1.0])
    affine[:3, 3] = -np.array(shape) * np.array(ZOOMS) / 2
    return affine


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return path


def labelled_dataset(root: Path, subjects=("01", "02", "03"), *, sessions=None,
                     table: str | None = TABLE, desc: str = "manual") -> tuple[Path, Path]:
    """A raw dataset (one T2w per subject, or per session) and ``derivatives/labels`` with
    ``desc-<desc>_dseg`` maps on the same grids and a top-level lookup table."""
    write_description(root)
    labels = root / "derivatives" / "labels"
    write_json(labels / "dataset_description.json",
               {"Name": "labels", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "Manual"}]})
    write_tsv(root / "participants.tsv",
              [{"participant_id": f"sub-{s}", "age_weeks": str(4 * i)}
               for i, s in enumerate(subjects)])
    seed = 0
    for subject in subjects:
        for session in sessions or [None]:
            seed += 1
            image = head_image(seed=seed, zooms=ZOOMS)
            affine = _affine(image.shape)
            stem = f"sub-{subject}" + (f"_ses-{session}" if session else "")
            folder = Path(f"sub-{subject}") / (f"ses-{session}" if session else "") / "anat"
            _save(image, affine, root / folder / f"{stem}_T2w.nii.gz")
            _save(head_labels(image), affine,
                  labels / folder / f"{stem}_desc-{desc}_dseg.nii.gz")
    if table is not None:
        (labels / f"desc-{desc}_dseg.tsv").write_text(table)
    return root, labels
