"""Does ``--pose-normalize`` help? Brain Dice of turned heads vs manual labels, with and without.

    nice -n 10 python -m benchmarks.pose_accuracy WORK_DIR [--atlases NAME ...]
        [--angles 0 15 30 45] [--header-angles 30] [--axes lr si]
        [--scale-to-ml 400] [--threads 2] [--reuse]               (from the repository root)

Why: pose normalisation stays off by default until a measurement shows it helps. The scans
are the CC0 fetal atlases the bundled model never trained on (``synth.ATLAS_HELD_OUT``),
enlarged (header only) to a newborn's brain volume as ``fetal_atlas_bids --scale-to-ml``
does, then turned about the brain centre, about the left-right axis (``lr``: nodding) and the
superior-inferior axis (``si``: turning), in two ways:

* ``resampled``: the turn is resampled into the voxel data and the header stays straight, on
  a grid padded so the brain stays inside: a head turned in the scanner, slices straight.
* ``header``: the voxel data stay as they are and the turn goes into the header affine (an
  oblique header): a turned head with the slices planned along it. The pipeline works in
  world coordinates, so the network sees the turned head here too; only the resampling
  differs, so by default this case runs at 30 degrees only (``--header-angles``).

Manual labels get the same treatment (nearest neighbour), so Dice is measured on each
scan's native grid, where the participant level writes its outputs. The participant level
(``--model drawem9-synth-starter --device cpu``, one process) runs once without and once with
``--pose-normalize`` on all scans.

Pose target: the real MNIInfant templates cannot be downloaded here, so a benchmark-only
``TEMPLATEFLOW_HOME`` (``WORK_DIR/templateflow``) holds ``tpl-MNIInfant`` cohort-1 (the one
all fetal ages map to): the MIT infant T2w template at birth
(``/work/shared/data/infant-t2w-templates-mit``, skull-stripped like the atlases; it also
lacks the cerebellum and lower brainstem), cropped to the brain and resampled from 0.8 to
1 mm. It is a stand-in, not MNIInfant, and the pipeline's real target is a head with skull.

Prints, per case, axis and angle: mean brain-label Dice without and with pose, how often the
QC fell back to the header, the residual rotation after pose (the angle of ``T_turned @ turn
@ inv(T_unturned)``, 0 when pose undoes the turn exactly) and the seconds the pose node took
(wall clock of the Nipype node). Writes ``WORK_DIR/pose_accuracy.tsv`` (one row per scan).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
from pathlib import Path
from types import ModuleType

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from bids_infantseg.cli.accuracy import compare, dseg_files, output_label_set, read_mapping
from bids_infantseg.core.pose import rotation_angle_deg
from bids_infantseg.io.naming import source_key
from bids_infantseg.synth import ATLAS_HELD_OUT

HERE = Path(__file__).resolve().parent
MIT_TEMPLATE = Path("/work/shared/data/infant-t2w-templates-mit/Template-Month0-T2w.nii.gz")
MODEL = "drawem9-synth-starter"
AXES = {"lr": 0, "si": 2}
"""Rotation axes in RAS world: left-right (x, nodding) and superior-inferior (z, turning)."""
TEMPLATE_VOXEL_MM = 1.0
TEMPLATE_MARGIN_MM = 10.0


def _load(name: str) -> ModuleType:
    """A sibling benchmark script as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fetal_atlas_bids = _load("fetal_atlas_bids")
accuracy_bench = _load("accuracy")


def turn(axis: str, degrees: float, centre: np.ndarray) -> np.ndarray:
    """4x4 world (RAS mm) rotation by ``degrees`` about ``axis`` through ``centre``."""
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != AXES[axis]]
    rotation = np.eye(4)
    rotation[[i, i, j, j], [i, j, i, j]] = [c, -s, s, c]
    to_centre = np.eye(4)
    to_centre[:3, 3] = centre
    return to_centre @ rotation @ np.linalg.inv(to_centre)


def padded_grid(shape: tuple[int, ...], affine: np.ndarray,
                rotation: np.ndarray) -> tuple[tuple[int, int, int], np.ndarray]:
    """A grid with ``affine``'s axes and voxels that holds the whole turned field of view."""
    corners = np.array([[x, y, z, 1.0] for x in (0, shape[0] - 1) for y in (0, shape[1] - 1)
                        for z in (0, shape[2] - 1)])
    voxels = (np.linalg.inv(affine) @ rotation @ affine @ corners.T).T[:, :3]
    low, high = np.floor(voxels.min(axis=0)), np.ceil(voxels.max(axis=0))
    shifted = affine.copy()
    shifted[:3, 3] = affine[:3, :3] @ low + affine[:3, 3]
    return tuple(int(n) for n in high - low + 1), shifted


def resample_turned(data: np.ndarray, affine: np.ndarray, rotation: np.ndarray, order: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``data`` turned by the world ``rotation`` into a straight (padded) grid."""
    shape, out_affine = padded_grid(data.shape, affine, rotation)
    index = np.linalg.inv(affine) @ np.linalg.inv(rotation) @ out_affine
    out = ndimage.affine_transform(data, index[:3, :3], index[:3, 3], output_shape=shape,
                                   order=order, mode="constant", cval=0.0)
    return out, out_affine


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """NIfTI with qform and sform both set to ``affine``, so no reader sees another pose."""
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)


def write_scans(bids: Path, folders: list[Path], angles: dict[str, list[float]],
                axes: list[str], scale_to_ml: float) -> pd.DataFrame:
    """The turned scans and their manual labels as BIDS; one manifest row per scan.

    ``angles`` maps each case to its angles. Each atlas is one subject; its scans differ in
    ``acq`` (``rot0``, ``resampledlr15``, ...).
    """
    fetal_atlas_bids.write_dataset(bids, [])  # descriptions, label table and map only
    manual = bids / "derivatives" / "manual"
    rows, participants = [], ["participant_id\tscan_age"]
    for folder in folders:
        sub = fetal_atlas_bids.subject_label(folder)
        weeks = re.search(r"GA(\d+)", folder.name).group(1)
        participants.append(f"sub-{sub}\t{weeks}")
        factor = fetal_atlas_bids.brain_scale(folder / "parcellation.nii.gz", scale_to_ml)
        t2w, labels = nib.load(folder / "srr.nii.gz"), nib.load(folder / "parcellation.nii.gz")
        affine = t2w.affine.copy()
        affine[:3, :3] *= factor
        image = np.asanyarray(t2w.dataobj, dtype=np.float32)
        parcels = np.asanyarray(labels.dataobj).astype(np.uint8)
        centre = (affine @ np.append(np.argwhere(parcels > 0).mean(axis=0), 1.0))[:3]
        variants = [("none", "lr", 0.0)] + [(case, axis, angle) for case in angles
                                             for axis in axes for angle in angles[case]
                                             if angle]
        for case, axis, angle in variants:
            acq = "rot0" if not angle else f"{case}{axis}{angle:g}"
            rotation = turn(axis, angle, centre)
            if case == "resampled":
                data, out_affine = resample_turned(image, affine, rotation, order=1)
                lab, _ = resample_turned(parcels, affine, rotation, order=0)
            else:
                data, lab, out_affine = image, parcels, rotation @ affine
            stem = f"sub-{sub}_acq-{acq}"
            _save(data, out_affine, bids / f"sub-{sub}" / "anat" / f"{stem}_T2w.nii.gz")
            _save(lab, out_affine,
                  manual / f"sub-{sub}" / "anat" / f"{stem}_desc-atlas_dseg.nii.gz")
            rows.append({"scan": stem, "atlas": folder.name, "case": case,
                         "axis": axis if angle else "-", "angle": angle,
                         "turn": json.dumps(rotation.round(6).tolist())})
    (bids / "participants.tsv").write_text("\n".join(participants) + "\n")
    return pd.DataFrame(rows)


def write_templateflow(home: Path, source: Path, *, note: str) -> Path:
    """A benchmark-only TEMPLATEFLOW_HOME whose tpl-MNIInfant cohort-1 head T2w is ``source``,
    cropped to its non-zero voxels (plus a margin) and resampled to 1 mm as ``res-1`` says."""
    image = nib.load(source)
    data = np.asanyarray(image.dataobj, dtype=np.float32)
    zooms = np.asarray(image.header.get_zooms()[:3], float)
    inside = np.argwhere(data > 0)
    margin = np.ceil(TEMPLATE_MARGIN_MM / zooms)
    low = np.maximum(inside.min(axis=0) - margin, 0)
    high = np.minimum(inside.max(axis=0) + margin, np.asarray(data.shape) - 1)
    step = TEMPLATE_VOXEL_MM / zooms
    shape = tuple(int(n) for n in np.floor((high - low) / step) + 1)
    resampled = ndimage.affine_transform(data, step, low, output_shape=shape, order=1)
    voxel_map = np.diag([*step, 1.0])
    voxel_map[:3, 3] = low
    tpl = home / "tpl-MNIInfant"
    path = tpl / "cohort-1" / "tpl-MNIInfant_cohort-1_res-1_T2w.nii.gz"
    _save(resampled, image.affine @ voxel_map, path)
    description = {"Identifier": "MNIInfant", "Name": f"BENCHMARK STAND-IN, not MNIInfant: "
                   f"{note}", "BIDSVersion": "1.1.0", "TemplateFlowVersion": "1.0.0",
                   "cohort": {"1": {"age": [0.0, 2.0], "units": "months"}}}
    (tpl / "template_description.json").write_text(json.dumps(description, indent=2))
    return home


def run_arm(bids: Path, out: Path, pose: bool, threads: int, home: Path, reuse: bool) -> float:
    """One participant-level run (its wall seconds; 0 when ``reuse`` found outputs)."""
    if reuse and (out / "dataset_description.json").is_file():
        return 0.0
    os.environ["TEMPLATEFLOW_HOME"] = str(home)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    extra = ["--device", "cpu", "--nprocs", "1", "--omp-nthreads", str(threads)]
    extra += ["--pose-normalize"] if pose else []
    timing = accuracy_bench.run_participant(bids, out, MODEL, extra)
    print(f"  {'with' if pose else 'without'} pose: {timing['scans']} scans in "
          f"{timing['wall_seconds']} s", flush=True)
    return float(timing["wall_seconds"])


def pose_records(out: Path) -> pd.DataFrame:
    """Per scan: the pose result from the dseg sidecar and the pose node's wall seconds."""
    from nipype.utils.filemanip import loadpkl

    seconds = {}
    for result_file in (out / ".work").rglob("pose/result_pose.pklz"):
        result = loadpkl(result_file)
        seconds[source_key(Path(result.inputs["in_file"]).name)] = result.runtime.duration
    rows = []
    for key, dseg in dseg_files(out, output_label_set(out).name).items():
        sidecar = json.loads(Path(str(dseg).replace(".nii.gz", ".json")).read_text())
        pose = sidecar.get("PoseNormalization")
        if pose is None:
            continue
        rows.append({"scan": key, "accepted": bool(pose["accepted"]),
                     "pose_transform": json.dumps(pose["transform"]),
                     "pose_message": pose["message"], "pose_seconds": seconds.get(key)})
    return pd.DataFrame(rows)


def residual_deg(row: pd.Series, unturned: dict[str, np.ndarray]) -> float:
    """Rotation left after pose, relative to the pose found for the atlas's unturned scan."""
    reference = unturned.get(row["atlas"])
    if not row["accepted"] or reference is None:
        return float("nan")
    transform = np.array(json.loads(row["pose_transform"]))
    return rotation_angle_deg(transform @ np.array(json.loads(row["turn"]))
                              @ np.linalg.inv(reference))


def brain_dice(out: Path, manual: Path, mapping: dict[int, int]) -> pd.Series:
    """Mean brain-label Dice per scan (labels the manual map holds)."""
    return accuracy_bench.brain_mean_dice(compare(out, manual, mapping=mapping),
                                          output_label_set(out))


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """One row per case, axis and angle: Dice without/with pose, fallbacks, residual, seconds."""
    grouped = table.groupby(["case", "axis", "angle"], sort=True)
    summary = grouped.agg(scans=("scan", "count"), dice_without=("dice_without", "mean"),
                          dice_with=("dice_with", "mean"),
                          fallbacks=("accepted", lambda a: int((~a.astype(bool)).sum())),
                          residual_deg=("residual_deg", "median"),
                          pose_s=("pose_seconds", "mean")).reset_index()
    summary.insert(6, "change", summary["dice_with"] - summary["dice_without"])
    order = {"none": 0, "resampled": 1, "header": 2}
    return summary.sort_values(["case", "axis", "angle"], key=lambda c: c.map(order)
                               if c.name == "case" else c).reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="scans, outputs and the table go here")
    parser.add_argument("--atlas-root", type=Path, required=True,
                        help="folder of the fetal_SB_atlas_* folders")
    parser.add_argument("--atlases", nargs="+", default=list(ATLAS_HELD_OUT))
    parser.add_argument("--angles", nargs="+", type=float, default=[0.0, 15.0, 30.0, 45.0])
    parser.add_argument("--axes", nargs="+", choices=sorted(AXES), default=["lr", "si"])
    parser.add_argument("--header-angles", nargs="*", type=float, default=[30.0],
                        help="angles of the oblique-header case (default 30 only, to save time: "
                             "in world coordinates it is the same turned head; none: skip it)")
    parser.add_argument("--scale-to-ml", type=float, default=400.0,
                        help="brain + CSF volume the atlases are enlarged to (header only)")
    parser.add_argument("--mit-template", type=Path, default=MIT_TEMPLATE)
    parser.add_argument("--threads", type=int, default=2, help="inference and ITK threads")
    parser.add_argument("--reuse", action="store_true",
                        help="keep scans and outputs already in WORK (re-print the table)")
    args = parser.parse_args(argv)

    folders = [args.atlas_root / name for name in args.atlases]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        print(f"pose_accuracy: no atlas folder {', '.join(missing)}", file=sys.stderr)
        return 2
    bids, manifest_file = args.work / "bids", args.work / "scans.tsv"
    if args.reuse and manifest_file.is_file():
        manifest = pd.read_csv(manifest_file, sep="\t")
    else:
        angles = {"resampled": args.angles, "header": args.header_angles}
        manifest = write_scans(bids, folders, angles, args.axes, args.scale_to_ml)
        manifest.to_csv(manifest_file, sep="\t", index=False)
    print(f"{len(manifest)} scans from {len(folders)} atlases in {bids}", flush=True)
    mapping = read_mapping(bids / "code" / "atlas-to-drawem9.json")
    manual = bids / "derivatives" / "manual"

    home = write_templateflow(args.work / "templateflow", args.mit_template,
                              note=f"{args.mit_template.name} (MIT licence), cropped and "
                                   "resampled to 1 mm")
    print(f"pose target: {args.mit_template.name} (skull-stripped newborn brain without "
          "cerebellum), cropped and resampled 0.8 -> 1 mm, written as tpl-MNIInfant "
          f"cohort-1 in {home}: a stand-in, the real MNIInfant templates cannot be fetched here")

    wall, dice = {}, {}
    for pose in (False, True):
        out = args.work / ("with_pose" if pose else "without_pose")
        wall[pose] = run_arm(bids, out, pose, args.threads, home, args.reuse)
        dice[pose] = brain_dice(out, manual, mapping)
    table = manifest.merge(pose_records(args.work / "with_pose"), on="scan", how="left")
    table["dice_without"] = table["scan"].map(dice[False])
    table["dice_with"] = table["scan"].map(dice[True])
    unturned = {r["atlas"]: np.array(json.loads(r["pose_transform"]))
                for _, r in table[(table["angle"] == 0) & table["accepted"]].iterrows()}
    table["residual_deg"] = table.apply(residual_deg, axis=1, unturned=unturned)
    table.to_csv(args.work / "pose_accuracy.tsv", sep="\t", index=False, na_rep="n/a")

    summary = summarise(table)
    print("\nmean brain-label Dice vs manual labels (drawem9 brain labels the atlases hold); "
          "residual_deg: rotation left after pose vs the unturned scan's pose (median); "
          "pose_s: pose node wall seconds (mean)")
    print(summary.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    turned = table[table["angle"] != 0]
    for case, part in [("all turned", turned), *turned.groupby("case")]:
        print(f"{case}: Dice {part['dice_without'].mean():.3f} without, "
              f"{part['dice_with'].mean():.3f} with pose ({len(part)} scans)")
    falls = table[~table["accepted"].astype(bool)]
    print(f"QC fallback fired on {len(falls)} of {len(table)} scans"
          + "".join(f"\n  {r.scan}: {r.pose_message}" for r in falls.itertuples()))
    print(f"pose node: {table['pose_seconds'].mean():.1f} s mean, "
          f"{table['pose_seconds'].max():.1f} s max per scan; participant wall time "
          f"{wall[False]:.0f} s without, {wall[True]:.0f} s with pose "
          f"({'reused outputs' if args.reuse else f'{len(table)} scans each'})")
    print(f"per-scan table: {args.work / 'pose_accuracy.tsv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
