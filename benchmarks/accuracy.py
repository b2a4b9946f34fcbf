"""Accuracy of a model on a labelled BIDS dataset: per-label Dice and accuracy, with overlays.

    python benchmarks/accuracy.py BIDS_DIR LABELS_DIR --results DIR [--output OUT]
        [--model NAME|PATH] [--map FILE] [--labels-desc D] [--reuse] [-- PARTICIPANT_ARGS ...]

``BIDS_DIR`` is any BIDS dataset of T2w images; ``LABELS_DIR`` a derivatives folder of
manual ``_dseg`` images on the same grids (e.g. ``BIDS_DIR/derivatives/manual``). Unless
``--reuse`` is given, the real command line ``bids_infantseg BIDS_DIR OUT participant`` runs
first (``OUT`` defaults to ``RESULTS/bids_infantseg``; arguments after ``--`` are passed on)
and its wall time is measured. The comparison itself is ``bids_infantseg.cli.accuracy`` (the tool
users run on their own manual labels), so the benchmark and users share one definition.

Writes to ``RESULTS``: ``per_scan.tsv`` (Dice and accuracy per scan and label),
``summary.tsv`` (mean and SD over scans), ``dice.md`` (Dice per label and scan, a Markdown
table for reports), ``timing.json`` and ``overlays/<scan>.png``:
the T2w with the manual (top row) and predicted (bottom row) label outlines, in the model's
label colours, through the centre of the manual brain in three views. Prints the summary,
with the mean Dice over the brain labels present in the manual labels.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bids_infantseg.cli.accuracy import (  # noqa: E402
    AccuracyError,
    apply_mapping,
    compare,
    dseg_files,
    output_label_set,
    read_mapping,
    summary,
)
from bids_infantseg.model.labelmap import LabelMapping  # noqa: E402
from bids_infantseg.model.labels import DRAWEM9, LabelSet  # noqa: E402

VIEWS = {"axial": 2, "coronal": 1, "sagittal": 0}


def model_label_set(output_dir: Path) -> LabelSet:
    """The outputs' label set; DrawEM9's own definition when it is that one, because
    tables written before the ``brain`` column do not say which labels are non-brain."""
    found = output_label_set(output_dir)
    same = found.name == DRAWEM9.name and found.indices.tolist() == DRAWEM9.indices.tolist()
    return DRAWEM9 if same else found


def run_participant(bids_dir: Path, output_dir: Path, model: str, extra: list[str]) -> dict:
    """Run the participant level as a user would; its wall time and the scans it wrote."""
    command = [sys.executable, "-m", "bids_infantseg", str(bids_dir), str(output_dir),
               "participant", "--model", model, *extra]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise AccuracyError(f"participant level failed ({done.returncode}): "
                            f"{done.stderr[-2000:]}")
    scans = len(dseg_files(output_dir, output_label_set(output_dir).name))
    return {"command": shlex.join(command[1:]), "wall_seconds": round(wall, 1), "scans": scans,
            "seconds_per_scan": round(wall / max(scans, 1), 1)}


def brain_mean_dice(per_scan: pd.DataFrame, label_set: LabelSet) -> pd.Series:
    """Per scan: mean Dice over the brain labels its manual labels hold."""
    # (labels absent from the manual map are left out: their Dice is 0 wherever predicted)
    brain = per_scan[per_scan["index"].isin(label_set.brain_indices)
                     & (per_scan["reference_voxels"] > 0)]
    return brain.groupby("scan")["dice"].mean()


def dice_markdown(per_scan: pd.DataFrame, label_set: LabelSet) -> str:
    """Dice per brain label the manual maps hold (rows) and scan (columns), with the mean
    over scans and, last, each scan's mean over the brain labels its manual map holds; then
    the labels predicted that no manual map holds, with their share of predicted voxels."""
    labelled = per_scan[per_scan["index"] != 0]
    in_manual = labelled.groupby("name")["reference_voxels"].sum() > 0
    extra = labelled[labelled["name"].isin(in_manual.index[~in_manual])]
    brain = labelled[labelled["index"].isin(label_set.brain_indices)
                     & labelled["name"].isin(in_manual.index[in_manual])]
    wide = brain.pivot(index="name", columns="scan", values="dice")
    wide = wide.loc[[lab.name for lab in label_set.labels if lab.name in wide.index]]
    wide["mean"] = wide.mean(axis=1)
    means = brain_mean_dice(per_scan, label_set)
    wide.loc["brain mean (labels in the manual map)"] = [*means.reindex(wide.columns[:-1]),
                                                         means.mean()]
    lines = ["| label | " + " | ".join(wide.columns) + " |",
             "|---|" + "---:|" * len(wide.columns)]
    lines += [f"| {name} | " + " | ".join("n/a" if np.isnan(v) else f"{v:.3f}" for v in row)
              + " |" for name, row in wide.iterrows()]
    share = (extra.groupby("name")["predicted_voxels"].sum()
             / labelled["predicted_voxels"].sum())
    share = share[share > 0]
    if len(share):
        lines.append("\nPredicted, but in no manual map (share of the voxels predicted "
                     "other than 0): " + ", ".join(f"{name} {100 * value:.1f}%"
                                                   for name, value in share.items()))
    return "\n".join(lines) + "\n"


def _outlines(ax: plt.Axes, plane: np.ndarray, label_set: LabelSet) -> None:
    """Every label but 0 (non-brain tissue too: where a model puts it is worth seeing)."""
    for lab in label_set.labels:
        if lab.index != 0 and (plane == lab.index).any():
            ax.contour(plane == lab.index, levels=[0.5], colors=[lab.color], linewidths=1.0)


def overlay_figure(t2w: nib.Nifti1Image, manual: np.ndarray, predicted: np.ndarray,
                   label_set: LabelSet, title: str,
                   rows: tuple[str, str] = ("manual", "predicted")) -> plt.Figure:
    """T2w with manual (top) and predicted (bottom) outlines (or two models', named by
    ``rows``), three views through the centre of the top map's brain, cropped to the
    labelled part. Label maps are on the T2w grid; everything is shown in RAS, superior/
    anterior up."""
    canonical = nib.as_closest_canonical(t2w)
    flip = nib.orientations.ornt_transform(nib.io_orientation(t2w.affine),
                                           nib.io_orientation(canonical.affine))
    image = np.asanyarray(canonical.dataobj, dtype=np.float32)
    maps = [nib.orientations.apply_orientation(m, flip) for m in (manual, predicted)]
    labelled = np.argwhere((maps[0] > 0) | (maps[1] > 0))
    if labelled.size:
        lo = np.maximum(labelled.min(axis=0) - 8, 0)
        crop = tuple(slice(a, b + 9) for a, b in zip(lo, labelled.max(axis=0), strict=True))
        image, maps = image[crop], [m[crop] for m in maps]
    zooms = canonical.header.get_zooms()[:3]
    brain = np.isin(maps[0], label_set.brain_indices)
    centre = np.argwhere(brain).mean(axis=0).round().astype(int) if brain.any() \
        else np.array(image.shape) // 2
    low, high = np.percentile(image[image > 0], (1, 99)) if (image > 0).any() else (0, 1)
    fig, axes = plt.subplots(2, 3, figsize=(13, 9))
    fig.patch.set_facecolor("black")
    for column, (view, axis) in enumerate(VIEWS.items()):
        across, up = (a for a in range(3) if a != axis)
        for row, (label_map, name) in enumerate(zip(maps, rows, strict=True)):
            ax = axes[row, column]
            ax.imshow(np.take(image, centre[axis], axis=axis).T, cmap="gray", vmin=low,
                      vmax=high, origin="lower", aspect=zooms[up] / zooms[across],
                      interpolation="nearest")
            _outlines(ax, np.take(label_map, centre[axis], axis=axis).T, label_set)
            ax.set_axis_off()
            ax.set_title(f"{name}, {view}", color="white", fontsize=9)
    fig.suptitle(title, color="white", fontsize=10)
    fig.tight_layout()
    return fig


def write_overlays(bids_dir: Path, output_dir: Path, labels_dir: Path, per_scan: pd.DataFrame,
                   folder: Path, *, labels_desc: str | None,
                   mapping: dict[int, int] | None,
                   predicted_mapping: LabelMapping | None = None) -> list[Path]:
    """One overlay PNG per compared scan (outputs through ``predicted_mapping`` if given)."""
    label_set = model_label_set(output_dir)
    predicted = dseg_files(output_dir, label_set.name)
    if predicted_mapping is not None:
        label_set = predicted_mapping.target
    manual = dseg_files(labels_dir, labels_desc)
    means = brain_mean_dice(per_scan, label_set)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for key in sorted(per_scan["scan"].unique()):
        t2w_paths = sorted(bids_dir.rglob(f"{key}_T2w.nii*"))
        if not t2w_paths:
            raise AccuracyError(f"{bids_dir}: no T2w image for {key}")
        t2w = nib.load(t2w_paths[0])
        ref = apply_mapping(np.asanyarray(nib.load(manual[key]).dataobj).astype(np.int64),
                            mapping)
        pred = np.asanyarray(nib.load(predicted[key]).dataobj).astype(np.int64)
        if predicted_mapping is not None:
            pred = predicted_mapping.apply(pred, predicted[key])
        fig = overlay_figure(t2w, ref, pred, label_set,
                             f"{key}: mean brain Dice {means.get(key, np.nan):.3f}")
        path = folder / f"{key}.png"
        fig.savefig(path, dpi=90, facecolor=fig.get_facecolor(), metadata={"Software": None})
        plt.close(fig)
        written.append(path)
    return written


def split_participant_args(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """This script's arguments, and those after ``--`` for the participant level."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        return argv, []
    return argv[:argv.index("--")], argv[argv.index("--") + 1:]


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    argv, extra = split_participant_args(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bids_dir", type=Path, help="BIDS dataset of T2w images")
    parser.add_argument("labels_dir", type=Path, help="derivatives folder of manual _dseg")
    parser.add_argument("--results", type=Path, required=True, help="tables and overlays go here")
    parser.add_argument("--output", type=Path,
                        help="participant outputs (default: RESULTS/bids_infantseg)")
    parser.add_argument("--model", default="default", help="bundled model name or folder")
    parser.add_argument("--map", type=Path, help='JSON {"manual index": model index}')
    parser.add_argument("--labels-desc", help="only manual dseg files with this desc")
    parser.add_argument("--predicted-map", metavar="NAME|TSV",
                        help="score the outputs through this label mapping (aseg-to-drawem9: "
                             "an aseg model against DrawEM9 manual labels)")
    parser.add_argument("--reuse", action="store_true",
                        help="compare the outputs already in --output; run nothing")
    return parser.parse_args(argv), extra


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    output = args.output or args.results / "bids_infantseg"
    args.results.mkdir(parents=True, exist_ok=True)
    try:
        mapping = read_mapping(args.map) if args.map else None
        predicted_mapping = (LabelMapping.load(args.predicted_map) if args.predicted_map
                             else None)
        if not args.reuse:
            timing = run_participant(args.bids_dir, output, args.model, extra)
            (args.results / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")
            print(f"participant level: {timing['scans']} scans in {timing['wall_seconds']} s "
                  f"({timing['seconds_per_scan']} s per scan)")
        per_scan = compare(output, args.labels_dir, labels_desc=args.labels_desc,
                           mapping=mapping, predicted_mapping=predicted_mapping)
        overlays = write_overlays(args.bids_dir, output, args.labels_dir, per_scan,
                                  args.results / "overlays", labels_desc=args.labels_desc,
                                  mapping=mapping, predicted_mapping=predicted_mapping)
    except (AccuracyError, OSError, ValueError) as exc:
        print(f"accuracy: error: {exc}", file=sys.stderr)
        return 2
    per_scan.to_csv(args.results / "per_scan.tsv", sep="\t", index=False, na_rep="n/a")
    table = summary(per_scan)
    table.to_csv(args.results / "summary.tsv", sep="\t", index=False, na_rep="n/a")
    label_set = predicted_mapping.target if predicted_mapping else model_label_set(output)
    (args.results / "dice.md").write_text(dice_markdown(per_scan, label_set))
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    means = brain_mean_dice(per_scan, label_set)
    print(means.to_string(float_format=lambda x: f"{x:.3f}"))
    print(f"mean brain Dice over scans: {means.mean():.3f}; "
          f"overlays: {len(overlays)} in {args.results / 'overlays'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
