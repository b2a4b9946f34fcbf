"""A small BIDS dataset to try the app on: ``bids_infantseg_demo OUT_DIR``.

Generated, not shipped: the package draws it from fixed seeds into the folder named. Three
synthetic T2w scans whose anatomy is real: each is painted (``bids_infantseg.synth``, with an
age-appropriate T2 contrast and a CSF, skull and scalp shell around the brain) from a real
infant's label map shipped in ``data/demo`` (DCAN Labs' BIBSnet asegs, Apache-2.0; see its
README), so the quick start shows infant folding, ventricles and deep grey matter rather than
procedural shapes. The 2- and 8-month maps are held out from the bundled models' training;
the 12-month one is not (no held-out map is near 12 months); the dataset says, from the
bundled model cards, which model was trained on which map. sub-01 at 2 and 8 months (two
different infants' maps: no longitudinal pair is held out), sub-02 at 12 months. Ages are
in ``sessions.tsv`` (months, per ``sessions.json``). The scans use different, realistic
voxel orders and tilts (LAS, oblique RAS, LPS) so orientation handling is exercised. Their
true DrawEM9 labels are included as a derivative dataset (``derivatives/phantom-truth``) to
score the app's output against.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_infantseg import __version__, synth
from bids_infantseg.model.card import bundled_model_names, bundled_models_dir, read_card
from bids_infantseg.model.labels import DRAWEM9
from bids_infantseg.utils.errors import InfantsegError
from bids_infantseg.utils.files import atomic_write

MAPS = Path(__file__).resolve().parents[1] / "data" / "demo"
"""The shipped label maps (``scripts/make_demo_labelmaps.py`` made them), licence and credit."""
SCHEME = "freesurfer-aseg"
CREDIT = ("DCAN Labs, University of Minnesota: BIBSnet template_input_asegs (Hendrickson et "
          "al., doi:10.1101/2023.03.22.533696; Apache-2.0), infants of the Baby Open Brains "
          "release (Feczko et al., Sci Data 2025; OpenNeuro ds005450, CC0)")


class DemoError(InfantsegError, ValueError):
    """A demo that cannot be written where asked; the message names the path."""


@dataclass(frozen=True)
class DemoScan:
    subject: str
    session: str
    age_months: float
    labelmap: str
    """File in ``MAPS``: the real infant aseg map the scan's anatomy comes from."""
    map_age_months: float
    seed: int
    shape: tuple[int, int, int]
    voxel_size: tuple[float, float, float]
    axcodes: str
    oblique_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def stem(self) -> str:
        return f"sub-{self.subject}_ses-{self.session}"

    @property
    def folder(self) -> str:
        return f"sub-{self.subject}/ses-{self.session}/anat"

    def anatomy(self) -> synth.LabelMap:
        """The map as an anatomy source, its cortex always repainted as an even ribbon:
        joint label fusion fuses the banks of sulci into thick cortex (``synth.labelmaps``),
        which training sees in a fifth of its volumes but a demo should not show."""
        return synth.LabelMap(MAPS / self.labelmap, synth.Scheme.load(SCHEME),
                              self.map_age_months, thin_cortex=1.0)


SCANS = (
    DemoScan("01", "01", 2.0, "2mo_aseg.nii.gz", 2.0, 101, (128, 144, 128), (1.1, 1.1, 1.1),
             "LAS"),
    DemoScan("01", "02", 8.0, "8mo_aseg.nii.gz", 8.0, 102, (136, 156, 120), (1.1, 1.1, 1.3),
             "RAS", (12.0, 0.0, 6.0)),
    DemoScan("02", "01", 12.0, "12mo_aseg.nii.gz", 12.0, 201, (136, 160, 128), (1.2, 1.2, 1.2),
             "LPS", (0.0, -5.0, 0.0)),
)
SEX = {"01": "F", "02": "M"}


def _trained_files(training: dict) -> set[str] | None:
    """Files a card's ``training`` drew from (``data.sources[].files``), its warm start's
    included where the card records them; None where it records no sources."""
    sources = training.get("data", {}).get("sources")
    if sources is None:
        return None
    files = {f for source in sources for f in source.get("files", ())}
    parent = training.get("warm_start", {}).get("training", {})
    return files | (_trained_files(parent) or set())


def training_use(labelmap: str) -> dict[str, bool | None]:
    """Bundled model ("name version") -> whether it was trained on ``labelmap`` (held-out
    files only validated it); None where its card does not say what it trained on."""
    use = {}
    for name in bundled_model_names():
        card = read_card(bundled_models_dir() / name)
        files = _trained_files(card.training)
        use[f"{card.name} {card.version}"] = None if files is None else labelmap in files
    return use


def provenance() -> str:
    """Per scan: the map its anatomy comes from, and which bundled models were and were not
    trained on that map (for the dataset's README and ``dataset_description.json``)."""
    verbs = {False: "not used to train", True: "used to train",
             None: "unknown whether used to train"}
    sentences = []
    for scan in SCANS:
        use = training_use(scan.labelmap)
        parts = [f"{scan.stem} ({scan.age_months:g} months): anatomy from {scan.labelmap}, "
                 f"a real {scan.map_age_months:g}-month-old's label map"]
        for trained, verb in verbs.items():
            models = [model for model, t in use.items() if t is trained]
            if models:
                parts.append(f"{verb} {(' or ' if trained is False else ' and ').join(models)}")
        sentences.append("; ".join(parts) + ".")
    return " ".join(sentences)


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def _write_json(path: Path, data: dict) -> None:
    _write_text(path, json.dumps(data, indent=2) + "\n")


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    atomic_write(path, lambda tmp: nib.save(image, str(tmp)))


README = """\
# bids_infantseg demo dataset

Synthetic T2-weighted infant head scans written by `bids_infantseg.cli.demo` (bids_infantseg
{version}). No one was scanned: each image is painted (`bids_infantseg.synth`: T2 contrast
of its age, a CSF, skull and scalp shell added around the brain, random pose and a smooth
deformation) from a real infant's brain label map, FreeSurfer aseg codes drawn by joint
label fusion. The participants, their sex and sessions are made up. Ages are postnatal, in
months (`sub-*/sub-*_sessions.tsv`, units in `sessions.json`).

{provenance}

Label maps: {credit}. Licence: Apache-2.0 (`LICENSE`); the same infants are published
under CC0 in the Baby Open Brains release.

The scans' true DrawEM9 tissue labels (the painted label map) are in
`derivatives/phantom-truth`.
"""


def _write_raw_metadata(root: Path) -> None:
    _write_json(root / "dataset_description.json", {
        "Name": "bids_infantseg demo: synthetic T2w scans of real infant anatomy",
        "BIDSVersion": "1.10.0",
        "DatasetType": "raw",
        "License": "Apache-2.0",
        "Authors": ["bids_infantseg developers"],
        "Acknowledgements": f"Anatomy from real infant label maps: {CREDIT}. {provenance()}",
        "ReferencesAndLinks": ["https://doi.org/10.1101/2023.03.22.533696",
                               "https://openneuro.org/datasets/ds005450"],
        "GeneratedBy": [{"Name": "bids_infantseg.cli.demo", "Version": __version__}],
    })
    _write_text(root / "README", README.format(version=__version__, credit=CREDIT,
                                               provenance=provenance()))
    _write_text(root / "LICENSE", (MAPS / "LICENSE").read_text())
    subjects = sorted({scan.subject for scan in SCANS})
    _write_text(root / "participants.tsv", "participant_id\tsex\n" + "".join(
        f"sub-{s}\t{SEX[s]}\n" for s in subjects))
    _write_json(root / "participants.json", {
        "sex": {"Description": "sex of the (made-up) participant",
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
                         "Description": "true labels of the synthetic scans: the real infant "
                                        "label maps as painted, in DrawEM9 tissues"}],
    })
    _write_text(truth / f"desc-{DRAWEM9.name}_dseg.tsv", DRAWEM9.dseg_tsv())


def check_destination(path: Path, force: bool = False) -> None:
    """Refuse a path that is a file, or a folder with anything in it unless ``force``: the
    demo would mix its files into another dataset (its description and participants)."""
    if path.exists() and not path.is_dir():
        raise DemoError(f"{path}: exists and is not a folder; name a new folder")
    if path.is_dir() and not force and any(path.iterdir()):
        raise DemoError(f"{path}: folder is not empty; name a new or empty folder, or pass "
                        "--force to write the demo into it (replacing files of the same name)")


def write_demo_dataset(path: Path, force: bool = False) -> Path:
    """Write the demo dataset (raw T2w scans plus their true labels) under ``path``, which
    must be new or empty unless ``force`` (``DemoError`` otherwise). Each file is written
    atomically."""
    root = Path(path)
    check_destination(root, force)
    truth = root / "derivatives" / "phantom-truth"
    _write_raw_metadata(root)
    _write_truth_metadata(truth)
    for scan in SCANS:
        image, labels, affine = synth.phantom(scan.age_months, scan.seed, scan.shape,
                                              scan.voxel_size, axcodes=scan.axcodes,
                                              oblique_deg=scan.oblique_deg,
                                              anatomy=scan.anatomy())
        anat = root / scan.folder
        _save_nifti(anat / f"{scan.stem}_T2w.nii.gz", np.round(image).astype(np.int16), affine)
        _write_json(anat / f"{scan.stem}_T2w.json", {
            "MRAcquisitionType": "3D",
            "SyntheticPhantom": {"Generator": "bids_infantseg.synth.phantom",
                                 "AgeMonths": scan.age_months, "Seed": scan.seed,
                                 "LabelMap": f"bids_infantseg/data/demo/{scan.labelmap}",
                                 "LabelMapAgeMonths": scan.map_age_months},
        })
        _save_nifti(truth / scan.folder / f"{scan.stem}_space-T2w_desc-{DRAWEM9.name}_dseg.nii.gz",
                    labels, affine)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bids_infantseg_demo",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path,
                        help="folder to write the BIDS dataset into (new or empty)")
    parser.add_argument("--force", action="store_true",
                        help="write into a folder that is not empty, replacing files of the "
                             "same name")
    args = parser.parse_args(argv)
    try:
        root = write_demo_dataset(args.out_dir, force=args.force).resolve()
    except DemoError as exc:  # a destination it may not use: nothing written
        print(f"bids_infantseg_demo: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system failing (as the app's own exit status 1)
        print(f"bids_infantseg_demo: error: {exc}", file=sys.stderr)
        return 1
    subjects = len({scan.subject for scan in SCANS})
    print(f"wrote the generated demo dataset ({len(SCANS)} T2w scans of real infant anatomy "
          f"for {subjects} made-up participants, true labels in derivatives/phantom-truth) "
          f"to {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
