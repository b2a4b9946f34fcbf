"""QC on scans that are right and on scans that are broken: the numbers behind QC's thresholds.

    python benchmarks/qc_calibration.py WORK \
        --templates ../shared/data/infant-t2w-templates-mit \
        --models default /path/to/other-model [-- PARTICIPANT_ARGS ...]

Datasets (built under ``WORK``, reused when present):

- ``demo``: the generated demo (``bids_infantseg_demo``; 3 scans of real infant anatomy, 2, 8
  and 12 months);
- ``mit``: the four real MIT infant templates (0, 6, 9, 12 months; brain-only, cerebrum only:
  no cerebellum, hardly any brainstem), as ``benchmarks/mit_templates.py`` builds them;
- ``broken``: inputs no segmentation can be right on, from the demo's first scan: uniform
  noise of the same grid, and the scan with its axial or its sagittal slices shuffled.

Runs the participant level once per dataset and model (``WORK/out-<i>/<dataset>``; reused
when present) and prints one markdown row per scan and model: brain tissue volume, mean Dice
between views (and the lowest pair), mL of structures out of place, and the flags raised.
``qc.VIEW_DICE_WARN`` and ``qc.MISPLACED_WARN_*`` quote these numbers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import split_participant_args  # noqa: E402
from mit_templates import build_dataset  # noqa: E402

from bids_infantseg.cli.demo import SCANS, write_demo_dataset  # noqa: E402

DEMO_SCAN = Path("sub-01", "ses-01", "anat", "sub-01_ses-01_T2w.nii.gz")


def build_broken(demo: Path, bids: Path) -> None:
    """Noise, and the demo's first scan with shuffled axial or sagittal slices (at its age)."""
    bids.mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text(json.dumps(
        {"Name": "broken inputs", "BIDSVersion": "1.10.0"}))
    img = nib.load(demo / DEMO_SCAN)
    data = np.asanyarray(img.dataobj).astype(np.float32)
    rng = np.random.default_rng(0)
    cases = {"noise": rng.uniform(0, data.max(), data.shape).astype(np.float32),
             "shuffledaxial": data[:, :, rng.permutation(data.shape[2])],
             "shuffledsagittal": data[rng.permutation(data.shape[0])]}
    rows = ["participant_id\tage_months"]
    for name, array in cases.items():
        out = bids / f"sub-{name}" / "anat" / f"sub-{name}_T2w.nii.gz"
        out.parent.mkdir(parents=True, exist_ok=True)
        if not out.exists():
            nib.save(nib.Nifti1Image(array, img.affine, img.header), out)
        rows.append(f"sub-{name}\t{SCANS[0].age_months:g}")
    (bids / "participants.tsv").write_text("\n".join(rows) + "\n")


def qc_rows(out: Path) -> list[tuple[str, dict]]:
    return [(path.name.split("_desc-")[0], json.loads(path.read_text())["QC"])
            for path in sorted(out.glob("sub-*/**/anat/*_qc.json"))]


def main(argv: list[str] | None = None) -> int:
    argv, extra = split_participant_args(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--templates", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=["default"])
    args = parser.parse_args(argv)
    work = args.work.resolve()
    datasets = {"demo": work / "demo", "mit": work / "mit", "broken": work / "broken"}
    if not (datasets["demo"] / "dataset_description.json").exists():
        write_demo_dataset(datasets["demo"])
    build_dataset(args.templates, datasets["mit"])
    build_broken(datasets["demo"], datasets["broken"])
    print("| dataset | scan | model | brain mL | views: mean Dice (lowest pair) | out of place "
          "mL | flags |")
    print("|---|---|---|---:|---|---|---|")
    for i, model in enumerate(args.models):
        for name, bids in datasets.items():
            out = work / f"out-{i}" / name
            if not (out / "dataset_description.json").exists():
                subprocess.run([sys.executable, "-m", "bids_infantseg", str(bids), str(out),
                                "participant", "--model", model, *extra], check=False)
            for scan, qc in qc_rows(out):
                pairs = [v for v in qc["view_dice_pairs"].values() if v is not None]
                views = (f"{qc['view_dice_mean']:.2f} ({min(pairs):.2f})" if pairs else "n/a")
                placed = ", ".join(f"{k} {v:.1f}" for k, v in qc.get("misplaced_ml", {}).items())
                flags = "; ".join(qc["flags"][k] for k in sorted(qc["flags"])) or "none"
                print(f"| {name} | {scan} | {Path(model).name} | {qc['brain_volume_ml']:.0f} | "
                      f"{views} | {placed} | {flags} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
