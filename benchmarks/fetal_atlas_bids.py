"""Turn the CC0 fetal atlases into a BIDS dataset with manual labels, for accuracy checks.

    python benchmarks/fetal_atlas_bids.py OUT_DIR [--atlas-root DIR] [--only NAME ...]
                                          [--scale-to-ml ML]

Writes ``OUT_DIR`` (raw: one subject per atlas, its ``srr.nii.gz`` as the T2w, gestational
age as dHCP's ``scan_age`` in participants.tsv), ``OUT_DIR/derivatives/manual`` (the
atlases' own parcellations as ``desc-atlas_dseg`` with their lookup table) and
``OUT_DIR/code/atlas-to-drawem9.json`` (the label map used by ``bids_infantseg.cli.accuracy --map``:
corpus callosum counts as white matter; the atlases have no hippocampus or head tissue).
``--scale-to-ml`` enlarges each atlas's voxels (header only; image and labels untouched) so
its brain and CSF measure that volume, e.g. 400 mL for a term newborn: the fetal brains
(70-250 mL) are far smaller than any infant's. The atlases are skull-stripped. Then:

    python benchmarks/accuracy.py OUT_DIR OUT_DIR/derivatives/manual --results RESULTS \\
        --map OUT_DIR/code/atlas-to-drawem9.json
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_infantseg.synth import ATLAS_TO_GEN, GEN_TO_DRAWEM9

ATLAS_LABELS = ["Background", "White matter", "Ventricles (intra-axial CSF)", "Cerebellum",
                "Extra-axial CSF", "Cortical grey matter", "Deep grey matter", "Brainstem",
                "Corpus callosum"]
ATLAS_TO_DRAWEM9 = {index: int(GEN_TO_DRAWEM9[gen]) for index, gen in enumerate(ATLAS_TO_GEN)
                    if index}
"""The mapping synthesis uses (``synth.ATLAS_TO_GEN``): one definition for both."""


def subject_label(folder: Path) -> str:
    """``fetal_SB_atlas_GA23_notoperated`` -> ``ga23notop``."""
    match = re.search(r"GA(\d+)_(not)?operated", folder.name)
    if not match:
        raise ValueError(f"{folder}: not a fetal atlas folder name")
    return f"ga{match.group(1)}{'notop' if match.group(2) else 'op'}"


def _json(path: Path, content: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n")


def scaled_copy(source: Path, target: Path, factor: float) -> None:
    """``source`` with voxels ``factor`` times larger in every direction (data untouched)."""
    image = nib.load(source)
    affine = image.affine.copy()
    affine[:3, :3] *= factor
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), affine, image.header), target)


def brain_scale(parcellation: Path, target_ml: float | None) -> float:
    """Linear factor that gives the atlas's brain and CSF ``target_ml`` (1 without a target)."""
    if target_ml is None:
        return 1.0
    image = nib.load(parcellation)
    voxel_ml = float(np.prod(image.header.get_zooms()[:3])) / 1000.0
    brain_ml = float((np.asanyarray(image.dataobj) > 0).sum()) * voxel_ml
    return (target_ml / brain_ml) ** (1.0 / 3.0)


def write_dataset(out: Path, folders: list[Path], scale_to_ml: float | None = None) -> Path:
    manual = out / "derivatives" / "manual"
    _json(out / "dataset_description.json",
          {"Name": "CC0 fetal spina bifida atlases (Fidon et al. 2021)", "BIDSVersion": "1.10.0",
           "DatasetType": "raw", "License": "CC0"})
    _json(manual / "dataset_description.json",
          {"Name": "manual atlas parcellations", "BIDSVersion": "1.10.0",
           "DatasetType": "derivative", "GeneratedBy": [{"Name": "Manual"}]})
    rows = ["participant_id\tscan_age"]
    for folder in folders:
        sub = subject_label(folder)
        gestational_weeks = re.search(r"GA(\d+)", folder.name).group(1)
        rows.append(f"sub-{sub}\t{gestational_weeks}")
        anat = out / f"sub-{sub}" / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        labels = manual / f"sub-{sub}" / "anat"
        labels.mkdir(parents=True, exist_ok=True)
        factor = brain_scale(folder / "parcellation.nii.gz", scale_to_ml)
        description = "super-resolution atlas, 0.8 mm, skull-stripped"
        if factor == 1.0:
            shutil.copyfile(folder / "srr.nii.gz", anat / f"sub-{sub}_T2w.nii.gz")
            shutil.copyfile(folder / "parcellation.nii.gz",
                            labels / f"sub-{sub}_desc-atlas_dseg.nii.gz")
        else:
            scaled_copy(folder / "srr.nii.gz", anat / f"sub-{sub}_T2w.nii.gz", factor)
            scaled_copy(folder / "parcellation.nii.gz",
                        labels / f"sub-{sub}_desc-atlas_dseg.nii.gz", factor)
            description += f"; voxels scaled x{factor:.3f} to a {scale_to_ml:g} mL brain"
        _json(anat / f"sub-{sub}_T2w.json", {"Description": description})
    (out / "participants.tsv").write_text("\n".join(rows) + "\n")
    _json(out / "participants.json",
          {"scan_age": {"Description": "gestational age", "Units": "weeks"}})
    (manual / "desc-atlas_dseg.tsv").write_text(
        "index\tname\n" + "".join(f"{i}\t{n}\n" for i, n in enumerate(ATLAS_LABELS)))
    _json(out / "code" / "atlas-to-drawem9.json", {str(k): v for k, v in ATLAS_TO_DRAWEM9.items()})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--atlas-root", type=Path, required=True,
                        help="folder of the fetal_SB_atlas_* folders")
    parser.add_argument("--only", nargs="+", help="atlas folder names to include")
    parser.add_argument("--scale-to-ml", type=float,
                        help="scale each atlas (header only) to this brain + CSF volume")
    args = parser.parse_args(argv)
    folders = sorted(p for p in args.atlas_root.glob("fetal_SB_atlas_*") if p.is_dir())
    if args.only:
        folders = [p for p in folders if p.name in args.only]
    if not folders:
        print(f"no atlas folders under {args.atlas_root}", file=sys.stderr)
        return 2
    write_dataset(args.out, folders, args.scale_to_ml)
    print(f"wrote {len(folders)} atlas subjects to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
