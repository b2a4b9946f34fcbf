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


BOBS_SPACE = "INFANTMNIacpc"
BOBS_TABLE = ("index\tname\n0\tUnknown\n2\tLeft-Cerebral-White-Matter\n3\tLeft-Cerebral-Cortex\n"
              "14\t3rd-Ventricle\n17\tLeft-Hippocampus\n41\tRight-Cerebral-White-Matter\n"
              "42\tRight-Cerebral-Cortex\n")


def aseg_labels(image: np.ndarray) -> np.ndarray:
    """FreeSurfer aseg codes on the phantom: the shell cortex (3 left, 42 right), the core
    white matter (2, 41), the blob hippocampus (17) and a third ventricle (14) in the middle."""
    tissue = head_labels(image)
    left = (np.arange(image.shape[0]) < image.shape[0] // 2)[:, None, None]
    codes = np.select([tissue == 1, tissue == 2, tissue == 3],
                      [np.where(left, 3, 42), np.where(left, 2, 41), 17], 0).astype(np.int16)
    x, y, z = (n // 2 for n in image.shape)
    codes[x - 2:x + 2, y - 2:y + 2, z - 2:z + 2] = 14
    return codes


def bobs_dataset(root: Path, sessions: dict[str, tuple[str, ...]] | None = None) -> Path:
    """A mock of Baby Open Brains (OpenNeuro ds005450): a raw dataset whose anat folders hold
    ``sub-X_ses-Nmo_space-INFANTMNIacpc_T2w`` and its ``desc-aseg_dseg`` side by side, with a
    top-level ``dseg.tsv`` of FreeSurfer names."""
    sessions = sessions or {"01": ("1mo", "6mo"), "02": ("3mo",)}
    write_description(root, Name="Baby Open Brains (mock)")
    write_tsv(root / "participants.tsv", [{"participant_id": f"sub-{s}"} for s in sessions])
    (root / "dseg.tsv").write_text(BOBS_TABLE)
    seed = 0
    for subject, labels in sessions.items():
        for session in labels:
            seed += 1
            image = head_image(seed=seed, zooms=ZOOMS)
            affine = _affine(image.shape)
            anat = root / f"sub-{subject}" / f"ses-{session}" / "anat"
            stem = f"sub-{subject}_ses-{session}_space-{BOBS_SPACE}"
            _save(image, affine, anat / f"{stem}_T2w.nii.gz")
            _save(aseg_labels(image), affine, anat / f"{stem}_desc-aseg_dseg.nii.gz")
    return root
