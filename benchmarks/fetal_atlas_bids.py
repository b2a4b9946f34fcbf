"""Turn the CC0 fetal atlases into a BIDS dataset with manual labels, for accuracy checks.

    python benchmarks/fetal_atlas_bids.py OUT_DIR [--atlas-root DIR] [--only NAME ...]

Writes ``OUT_DIR`` (raw: one subject per atlas, its ``srr.nii.gz`` as the T2w, gestational
age as dHCP's ``scan_age`` in participants.tsv), ``OUT_DIR/derivatives/manual`` (the
atlases' own parcellations as ``desc-atlas_dseg`` with their lookup table) and
``OUT_DIR/code/atlas-to-drawem9.json`` (the label map used by ``bids_infantseg.accuracy --map``:
corpus callosum counts as white matter; the atlases have no hippocampus or head tissue).
Then:

    bids_infantseg OUT_DIR OUT_DIR/derivatives/bids_infantseg participant
    python -m bids_infantseg.accuracy OUT_DIR/derivatives/bids_infantseg \\
        OUT_DIR/derivatives/manual --map OUT_DIR/code/atlas-to-drawem9.json
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

ATLAS_ROOT = Path(__file__).resolve().parents[2] / "shared/data/fetal-sb-atlas-cc0"
ATLAS_LABELS = ["Background", "White matter", "Ventricles (intra-axial CSF)", "Cerebellum",
                "Extra-axial CSF", "Cortical grey matter", "Deep grey matter", "Brainstem",
                "Corpus callosum"]
ATLAS_TO_DRAWEM9 = {1: 3, 2: 5, 3: 6, 4: 1, 5: 2, 6: 7, 7: 8, 8: 3}


def subject_label(folder: Path) -> str:
    """``fetal_SB_atlas_GA23_notoperated`` -> ``ga23notop``."""
    match = re.search(r"GA(\d+)_(not)?operated", folder.name)
    if not match:
        raise ValueError(f"{folder}: not a fetal atlas folder name")
    return f"ga{match.group(1)}{'notop' if match.group(2) else 'op'}"


def _json(path: Path, content: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n")


def write_dataset(out: Path, folders: list[Path]) -> Path:
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
        shutil.copyfile(folder / "srr.nii.gz", anat / f"sub-{sub}_T2w.nii.gz")
        _json(anat / f"sub-{sub}_T2w.json", {"Description": "super-resolution atlas, 0.8 mm"})
        labels = manual / f"sub-{sub}" / "anat"
        labels.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / "parcellation.nii.gz",
                        labels / f"sub-{sub}_desc-atlas_dseg.nii.gz")
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
    parser.add_argument("--atlas-root", type=Path, default=ATLAS_ROOT)
    parser.add_argument("--only", nargs="+", help="atlas folder names to include")
    args = parser.parse_args(argv)
    folders = sorted(p for p in args.atlas_root.glob("fetal_SB_atlas_*") if p.is_dir())
    if args.only:
        folders = [p for p in folders if p.name in args.only]
    if not folders:
        print(f"no atlas folders under {args.atlas_root}", file=sys.stderr)
        return 2
    write_dataset(args.out, folders)
    print(f"wrote {len(folders)} atlas subjects to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
