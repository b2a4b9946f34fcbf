"""Real infant templates (no labels): models side by side, volumes against real infant asegs.

    python benchmarks/mit_templates.py WORK --templates ../shared/data/infant-t2w-templates-mit \
        --aseg-root ../shared/data/infant-aseg-labels --models default /path/to/new-model \
        [-- PARTICIPANT_ARGS ...]

Builds a BIDS dataset of the four MIT-licensed templates (0, 6, 9 and 12 months, brain-only,
cerebrum only), runs the participant level once per model (``WORK/out-<i>``; reused when
present), and prints per template and model the volumes (mL) of every DrawEM9 label next to
those of the real infant aseg map of the nearest age (1, 6, 8 and 12 months; aseg codes
mapped to DrawEM9 by the shipped ``freesurfer-aseg`` synthesis scheme). The templates hold no
labels: there is no Dice, and the asegs are other infants (their cortex is the thick cortex
of automatic label fusion). Writes ``WORK/overlays/month<MM>.png``: the first model's label
outlines (top row) and the last's (bottom row) on the template.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import overlay_figure, split_participant_args  # noqa: E402

from bids_infantseg.model.labels import DRAWEM9  # noqa: E402
from bids_infantseg.synth.classes import GEN_TO_DRAWEM9  # noqa: E402
from bids_infantseg.synth.labelmaps import Scheme  # noqa: E402

MONTHS = {0: "1mo", 6: "6mo", 9: "8mo", 12: "12mo"}
"""Template month -> the aseg map of the nearest age."""


def build_dataset(templates: Path, bids: Path) -> None:
    """The templates as a BIDS dataset with their ages."""
    bids.mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text(json.dumps(
        {"Name": "MIT infant T2w templates", "BIDSVersion": "1.10.0"}))
    rows = ["participant_id\tage_months"]
    for month in MONTHS:
        subject = f"month{month:02d}"
        target = bids / f"sub-{subject}" / "anat" / f"sub-{subject}_T2w.nii.gz"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            shutil.copy(templates / f"Template-Month{month}-T2w.nii.gz", target)
        rows.append(f"sub-{subject}\t{month}")
    (bids / "participants.tsv").write_text("\n".join(rows) + "\n")


def aseg_volumes(aseg_root: Path) -> dict[int, pd.Series]:
    """DrawEM9 volumes (mL) of the aseg map matched to each template month."""
    scheme = Scheme.load("freesurfer-aseg")
    volumes = {}
    for month, name in MONTHS.items():
        raw = np.asarray(nib.load(aseg_root / f"{name}_aseg.nii.gz").dataobj).astype(np.int64)
        drawem = GEN_TO_DRAWEM9[scheme.lookup(int(raw.max()))[raw]]
        counts = np.bincount(drawem.ravel(), minlength=len(DRAWEM9))
        volumes[month] = pd.Series(counts / 1000.0, index=[lab.abbreviation
                                                           for lab in DRAWEM9.labels])
    return volumes


def model_volumes(out: Path, month: int) -> pd.Series:
    subject = f"month{month:02d}"
    table = pd.read_csv(out / f"sub-{subject}" / "anat" /
                        f"sub-{subject}_desc-drawem9_volumes.tsv", sep="\t")
    return pd.Series(table["volume_mm3"].to_numpy() / 1000.0,
                     index=[DRAWEM9.by_index(int(i)).abbreviation for i in table["index"]])


def main(argv: list[str] | None = None) -> int:
    argv, extra = split_participant_args(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--templates", type=Path, required=True)
    parser.add_argument("--aseg-root", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=["default"])
    args = parser.parse_args(argv)
    bids = args.work / "bids"
    build_dataset(args.templates, bids)
    outs = []
    for i, model in enumerate(args.models):
        out = args.work / f"out-{i}"
        if not (out / "dataset_description.json").exists():
            subprocess.run([sys.executable, "-m", "bids_infantseg", str(bids), str(out),
                            "participant", "--model", model, *extra], check=True)
        outs.append(out)
    reference = aseg_volumes(args.aseg_root)
    shown = ["CSF", "cGM", "WM", "Ven", "Cbm", "dGM", "BS", "Hip"]
    print("| template | volumes of | " + " | ".join(shown) + " |")
    print("|---|---|" + "---:|" * len(shown))
    overlays = args.work / "overlays"
    overlays.mkdir(exist_ok=True)
    for month in MONTHS:
        ref = reference[month]
        print(f"| month {month:02d} | aseg {MONTHS[month]} (other infant) | "
              + " | ".join(f"{ref[k]:.0f}" if k != "CSF" else "-" for k in shown) + " |")
        for model, out in zip(args.models, outs, strict=True):
            vol = model_volumes(out, month)
            print(f"| month {month:02d} | {model} | "
                  + " | ".join(f"{vol.get(k, 0.0):.0f}" for k in shown) + " |")
        subject = f"month{month:02d}"
        t2w = nib.load(bids / f"sub-{subject}" / "anat" / f"sub-{subject}_T2w.nii.gz")
        maps = [np.asanyarray(nib.load(out / f"sub-{subject}" / "anat" /
                                       f"sub-{subject}_space-T2w_desc-drawem9_dseg.nii.gz"
                                       ).dataobj).astype(np.int64) for out in (outs[0], outs[-1])]
        fig = overlay_figure(t2w, maps[0], maps[1], DRAWEM9,
                             f"MIT template month {month:02d}: top {args.models[0]}, "
                             f"bottom {args.models[-1]}",
                             rows=(Path(args.models[0]).name, Path(args.models[-1]).name))
        fig.savefig(overlays / f"month{month:02d}.png", dpi=80, facecolor=fig.get_facecolor(),
                    metadata={"Software": None})
        plt.close(fig)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
