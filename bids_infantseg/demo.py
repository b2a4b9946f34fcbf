"""A small synthetic BIDS dataset to try the app on: ``bids_infantseg_demo OUT_DIR``.

Generated, not shipped: the package draws it from fixed seeds into the folder named.
Two subjects, three T2w scans of synthetic phantoms (``bids_infantseg.synth``): sub-01 at two
weeks and at six months, sub-02 at twelve months, each with a real infant's brain tissue
volume (the newborn's procedural head is enlarged to it, see ``DemoScan.scale``). Ages are
in ``sessions.tsv`` (months, per ``sessions.json``). The scans use different, realistic voxel
orders and tilts (LAS, oblique RAS, LPS) so orientation handling is exercised. The
phantoms' true labels are included as a derivative dataset (``derivatives/phantom-truth``) to
score the app's output against.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_infantseg import __version__, synth
from bids_infantseg.model.labels import DRAWEM9


@dataclass(frozen=True)
class Enlarged:
    """A procedural head ``factor`` times larger along every axis (cortex and scalp too).

    Painted on coordinates and voxel sizes divided by ``factor``, so the same seed draws the
    same head; the synthesis itself (and so the training data) is unchanged.
    """

    factor: float

    def paint(self, p: np.ndarray, rng: np.random.Generator, voxel_size: np.ndarray,
              age_months: float) -> np.ndarray:
        return synth.Procedural().paint(p / self.factor, rng, voxel_size / self.factor,
                                        age_months)


@dataclass(frozen=True)
class DemoScan:
    subject: str
    session: str
    age_months: float
    seed: int
    shape: tuple[int, int, int]
    voxel_size: tuple[float, float, float]
    axcodes: str
    oblique_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0
    """Size of the head against the procedural one of its age, along each axis. The
    procedural cerebrum is sized to ``synth.brain_volume_ml`` but holds sulcal CSF and
    ventricles, so a procedural newborn has ~ 240 mL of brain tissue, where term newborns
    have 350-450 mL (dHCP) and the 1-month real aseg map 537 mL
    (``shared/data/infant-aseg-labels``); its 6- and 12-month heads (~ 700 and 820 mL) are
    within the real range."""

    @property
    def stem(self) -> str:
        return f"sub-{self.subject}_ses-{self.session}"

    @property
    def folder(self) -> str:
        return f"sub-{self.subject}/ses-{self.session}/anat"


SCANS = (
    DemoScan("01", "01", 0.5, 101, (120, 140, 112), (1.1, 1.1, 1.1), "LAS", scale=1.15),
    DemoScan("01", "02", 6.0, 102, (128, 150, 112), (1.1, 1.1, 1.3), "RAS", (12.0, 0.0, 6.0)),
    DemoScan("02", "01", 12.0, 201, (136, 160, 128), (1.2, 1.2, 1.2), "LPS", (0.0, -5.0, 0.0)),
)
SEX = {"01": "F", "02": "M"}


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))


README = """\
# bids_infantseg demo dataset

Synthetic T2-weighted infant head phantoms written by `bids_infantseg.demo`
(bids_infantseg {version}). No real participant was scanned: every image is drawn from a
random label map (see `bids_infantseg.synth`). Ages are postnatal, in months
(`sub-*/sub-*_sessions.tsv`, units in `sessions.json`).

The phantoms' true DrawEM9 tissue labels are in `derivatives/phantom-truth`.
"""


def _write_raw_metadata(root: Path) -> None:
    _write_json(root / "dataset_description.json", {
        "Name": "bids_infantseg synthetic demo",
        "BIDSVersion": "1.10.0",
        "DatasetType": "raw",
        "License": "CC0",
        "Authors": ["bids_infantseg developers"],
        "GeneratedBy": [{"Name": "bids_infantseg.demo", "Version": __version__}],
    })
    _write_text(root / "README", README.format(version=__version__))
    subjects = sorted({scan.subject for scan in SCANS})
    _write_text(root / "participants.tsv", "participant_id\tsex\n" + "".join(
        f"sub-{s}\t{SEX[s]}\n" for s in subjects))
    _write_json(root / "participants.json", {
        "sex": {"Description": "sex of the (synthetic) participant",
                "Levels": {"F": "female", "M": "male"}}})
    _write_json(root / "sessions.json", {
        "age": {"Description": "postnatal age at the session", "Units": "months"}})
    for subject in subjects:
        rows = [f"ses-{scan.session}\t{scan.age_months:g}\n" for scan in SCANS
                if scan.subject == subject]
        _write_text(root / f"sub-{subject}" / f"sub-{subject}_sessions.tsv",
                    "session_id\tage\n" + "".join(rows))


def _write_truth_metadata(truth: Path) -> None:
    _write_json(truth / "dataset_description.json", {
        "Name": "phantom-truth",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "bids_infantseg.synth", "Version": __version__,
                         "Description": "true labels of the synthetic phantoms"}],
    })
    _write_text(truth / f"desc-{DRAWEM9.name}_dseg.tsv", DRAWEM9.dseg_tsv())


def write_demo_dataset(path: Path) -> Path:
    """Write the demo dataset (raw T2w phantoms plus their true labels) under ``path``."""
    root = Path(path)
    truth = root / "derivatives" / "phantom-truth"
    _write_raw_metadata(root)
    _write_truth_metadata(truth)
    for scan in SCANS:
        anatomy = Enlarged(scan.scale) if scan.scale != 1.0 else None
        image, labels, affine = synth.phantom(scan.age_months, scan.seed, scan.shape,
                                              scan.voxel_size, axcodes=scan.axcodes,
                                              oblique_deg=scan.oblique_deg, anatomy=anatomy)
        anat = root / scan.folder
        _save_nifti(anat / f"{scan.stem}_T2w.nii.gz", np.round(image).astype(np.int16), affine)
        _write_json(anat / f"{scan.stem}_T2w.json", {
            "MRAcquisitionType": "3D",
            "SyntheticPhantom": {"Generator": "bids_infantseg.synth.phantom",
                                 "AgeMonths": scan.age_months, "Seed": scan.seed,
                                 "Scale": scan.scale},
        })
        _save_nifti(truth / scan.folder / f"{scan.stem}_space-T2w_desc-{DRAWEM9.name}_dseg.nii.gz",
                    labels, affine)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bids_infantseg_demo",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder to write the BIDS dataset into")
    args = parser.parse_args(argv)
    root = write_demo_dataset(args.out_dir).resolve()
    subjects = len({scan.subject for scan in SCANS})
    print(f"wrote the generated demo dataset ({len(SCANS)} T2w scans of {subjects} synthetic "
          f"infants, true labels in derivatives/phantom-truth) to {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
