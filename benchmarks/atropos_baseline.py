"""ANTs Atropos 3-class baseline beside our model: CSF / GM / WM Dice on labelled scans, and time.

    python benchmarks/atropos_baseline.py BIDS_DIR LABELS_DIR [--map FILE] [--ours DIR]
        [--labels-desc D] [--order csf,wm,gm] [--n4] [--mrf "[0.3,1x1x1]"]
        [--convergence "[5,0.001]"] [--threads 1] [--results DIR]
    python benchmarks/atropos_baseline.py --timing TEMPLATE [--timing-work DIR] [--model M]

**Needs ANTsPy** (``pip install antspyx``). It is a benchmark-only dependency and deliberately
not in setup.cfg; without it the script exits with a one-line message. (antspyx 0.6.3 pins
numpy<2.4 and scipy<1.16; it runs with numpy 2.4.6 and scipy 1.17.1, so reinstall those if
pip downgraded them.)

Inputs as ``benchmarks/accuracy.py``: ``BIDS_DIR`` holds the T2w images, ``LABELS_DIR`` the
manual ``_dseg`` images on their grids, ``--map`` a JSON ``{"manual index": DrawEM9 index}``
(e.g. ``code/atlas-to-drawem9.json`` of ``benchmarks/fetal_atlas_bids.py``).

For every manual label map, Atropos segments its T2w into 3 classes (K-means initialisation,
MRF ``--mrf`` and ``--convergence`` defaulting to the ANTs command line's own defaults) inside
the **reference brain mask**: every voxel whose DrawEM9 label is brain or CSF (not 0 Unknown,
not 4 Background). Its classes are named by their mean intensity, brightest first, in the
order ``--order``: T2w ``csf,wm,gm`` for newborns and fetuses (unmyelinated white matter is
brighter than grey matter), ``csf,gm,wm`` past about 9 months. With ``--n4`` the image is
first N4 bias-corrected inside the same mask, and the N4 time is part of the Atropos time.
The time per scan is wall seconds from reading the T2w to holding the tissue map (N4 when
asked, Atropos, class naming); ``import ants`` and Python start-up are not in it. ITK runs
``--threads`` threads (default 1, as the participant runs ``--omp-nthreads 1``).

Three tissues are scored against the reference, each method's labels merged the same way:
CSF = DrawEM9 {1, 5} (extra-axial CSF and ventricles), cGM = {2} (cortical grey matter),
WM = {3}, and all-grey = {2, 7, 9} (cortical and deep grey matter, hippocampus). Atropos's
grey class is scored as GM in both. With ``--ours DIR`` (the ``bids_infantseg`` participant
output folder, e.g. ``RESULTS/bids_infantseg`` of ``benchmarks/accuracy.py``) the model's
``_dseg`` of the same scans is scored too, as it is ("ours") and restricted to the reference
mask that Atropos was given ("ours in mask"). Prints a Markdown table per scan and the mean;
``--results`` also writes ``per_scan.tsv`` and ``table.md`` there.

``--timing TEMPLATE`` times both on one image (e.g. a 320^3 MIT template, brain-only): Atropos
with the template's nonzero voxels as the mask (reading the image to writing its tissue map,
``--order`` naming the classes: ``csf,gm,wm`` for the 12-month template), and the whole
participant level
(``bids_infantseg BIDS OUT participant --nprocs 1 --omp-nthreads 1``, process start-up
included) on a one-scan BIDS dataset made in ``--timing-work``. Prints both wall times, their
ratio and the load average before and after each (``os.getloadavg()``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bids_infantseg.cli.accuracy import (
    AccuracyError,
    apply_mapping,
    dseg_files,
    load_labels,
    output_label_set,
    read_mapping,
)

TISSUE_CODE = {"csf": 1, "gm": 2, "wm": 3}
"""Atropos's classes written as DrawEM9 indices, so one merge scores every method."""
GROUPS = {"CSF": (1, 5), "cGM": (2,), "WM": (3,), "all GM": (2, 7, 9)}
"""Tissue -> the DrawEM9 indices merged into it (reference and every method alike)."""
NON_BRAIN = (0, 4)
ORDERS = {"csf,wm,gm", "csf,gm,wm"}
NEEDS_ANTS = ("atropos_baseline: needs ANTsPy (pip install antspyx; a benchmark-only "
              "dependency, not in setup.cfg)")


def import_ants(threads: int = 1):
    """ANTsPy with ITK limited to ``threads`` threads; exits with one line when it is missing."""
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    try:
        import ants
    except ImportError:
        sys.exit(NEEDS_ANTS)
    return ants


def parse_order(text: str) -> tuple[str, str, str]:
    """``"csf,wm,gm"`` -> the tissue names, brightest class first."""
    order = tuple(part.strip().lower() for part in text.split(","))
    if sorted(order) != sorted(TISSUE_CODE) or len(order) != 3:
        raise argparse.ArgumentTypeError(f"--order: a permutation of csf,gm,wm, not {text!r}")
    return order  # type: ignore[return-value]


def reference_mask(reference: np.ndarray) -> np.ndarray:
    """Brain and CSF voxels of a DrawEM9 map: every label but 0 Unknown and 4 Background."""
    return ~np.isin(reference, NON_BRAIN)


def name_classes(classes: np.ndarray, image: np.ndarray,
                 order: tuple[str, str, str]) -> dict[int, str]:
    """Atropos class (1..3) -> tissue, by mean intensity: the brightest is ``order[0]``.

    A class with no voxels counts as the darkest (it then names no voxel)."""
    means = {k: float(image[classes == k].mean()) if (classes == k).any() else -np.inf
             for k in (1, 2, 3)}
    brightest_first = sorted(means, key=means.get, reverse=True)
    return dict(zip(brightest_first, order, strict=True))


def as_drawem9(classes: np.ndarray, names: dict[int, str]) -> np.ndarray:
    """Atropos classes as DrawEM9 indices (CSF 1, GM 2, WM 3; 0 outside the mask)."""
    out = np.zeros(classes.shape, dtype=np.int16)
    for k, tissue in names.items():
        out[classes == k] = TISSUE_CODE[tissue]
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; NaN when both are empty."""
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int(np.logical_and(a, b).sum()) / total if total else float("nan")


def tissue_dice(predicted: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Dice of each merged tissue of ``GROUPS`` (both maps in DrawEM9 indices)."""
    return {name: dice(np.isin(predicted, idx), np.isin(reference, idx))
            for name, idx in GROUPS.items()}


def atropos_tissues(ants, image: np.ndarray, zooms, mask: np.ndarray, *,
                    order: tuple[str, str, str], mrf: str = "[0.3,1x1x1]",
                    convergence: str = "[5,0.001]", n4: bool = False) -> np.ndarray:
    """Atropos 3-class K-means inside ``mask``, classes named by ``order``: a DrawEM9-coded
    map (CSF 1, GM 2, WM 3, 0 outside the mask). Arrays stay in the image's index order."""
    spacing = tuple(float(z) for z in zooms)
    img = ants.from_numpy(np.ascontiguousarray(image, dtype=np.float32), spacing=spacing)
    msk = ants.from_numpy(np.ascontiguousarray(mask, dtype=np.float32), spacing=spacing)
    if n4:
        img = ants.n4_bias_field_correction(img, mask=msk)
    result = ants.atropos(a=img, x=msk, i="kmeans[3]", m=mrf, c=convergence)
    classes = result["segmentation"].numpy().astype(np.int16)
    classes[~mask] = 0
    return as_drawem9(classes, name_classes(classes, img.numpy(), order))


def load_t2w(path: Path) -> tuple[np.ndarray, tuple, np.ndarray]:
    image = nib.load(path)
    data = np.asanyarray(image.dataobj, dtype=np.float32)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    return data, image.header.get_zooms()[:3], image.affine


def find_t2w(bids_dir: Path, key: str) -> Path:
    found = sorted(p for p in bids_dir.rglob(f"{key}_T2w.nii*")
                   if "derivatives" not in p.relative_to(bids_dir).parts)
    if not found:
        raise AccuracyError(f"{bids_dir}: no T2w image for {key}")
    return found[0]


def ours_info(path: Path) -> str:
    """The model and inference options a participant output's sidecar records."""
    sidecar = Path(str(path).replace(".nii.gz", ".json").replace(".nii", ".json"))
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return "unknown model"
    model = meta.get("Model", {})
    options = " ".join(meta.get("InferenceOptions", [])) or "no options"
    return f"{model.get('Name', '?')} {model.get('Version', '?')} ({options})"


def compare_scans(args, ants) -> pd.DataFrame:
    mapping = read_mapping(args.map) if args.map else None
    manual = dseg_files(args.labels_dir, args.labels_desc)
    if not manual:
        raise AccuracyError(f"{args.labels_dir}: no _dseg files")
    ours = {}
    if args.ours:
        ours = dseg_files(args.ours, output_label_set(args.ours).name)
    rows, infos = [], set()
    for key, manual_path in manual.items():
        reference, ref_affine = load_labels(manual_path)
        reference = apply_mapping(reference, mapping)
        start = time.perf_counter()
        image, zooms, affine = load_t2w(find_t2w(args.bids_dir, key))
        if image.shape != reference.shape or not np.allclose(affine, ref_affine, atol=1e-3):
            raise AccuracyError(f"{manual_path}: not on its T2w's grid")
        mask = reference_mask(reference)
        tissues = atropos_tissues(ants, image, zooms, mask, order=args.order, mrf=args.mrf,
                                  convergence=args.convergence, n4=args.n4)
        seconds = time.perf_counter() - start
        rows.append({"scan": key, "method": "Atropos", **tissue_dice(tissues, reference),
                     "seconds": seconds})
        if args.ours:
            if key not in ours:
                raise AccuracyError(f"{args.ours}: no segmentation of {key}")
            predicted, pred_affine = load_labels(ours[key])
            if predicted.shape != reference.shape:
                raise AccuracyError(f"{ours[key]}: not on the grid of {manual_path.name}")
            infos.add(ours_info(ours[key]))
            rows.append({"scan": key, "method": "ours", **tissue_dice(predicted, reference),
                         "seconds": np.nan})
            rows.append({"scan": key, "method": "ours in mask",
                         **tissue_dice(np.where(mask, predicted, 0), reference),
                         "seconds": np.nan})
        print(f"{key}: Atropos {seconds:.1f} s", file=sys.stderr)
    for info in sorted(infos):
        print(f"ours: {info}")
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """Per scan and method, then the mean over scans per method."""
    means = table.groupby("method", sort=False)[[*GROUPS, "seconds"]].mean().reset_index()
    means.insert(0, "scan", f"mean ({table['scan'].nunique()})")
    rows = pd.concat([table, means], ignore_index=True)
    lines = ["| scan | method | CSF | cGM | WM | all GM | Atropos s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for _, row in rows.iterrows():
        bold = row["scan"].startswith("mean")
        cells = ["n/a" if np.isnan(row[c]) else f"{row[c]:.3f}" for c in GROUPS]
        seconds = "" if np.isnan(row["seconds"]) else f"{row['seconds']:.1f}"
        scan = f"**{row['scan']}**" if bold else row["scan"]
        lines.append(f"| {scan} | {row['method']} | " + " | ".join(cells) + f" | {seconds} |")
    return "\n".join(lines) + "\n"


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return (f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min, "
            f"{os.cpu_count()} CPUs)")


def one_scan_bids(template: Path, folder: Path) -> Path:
    """A BIDS dataset holding ``template`` as sub-template's T2w (no age: the default)."""
    if folder.exists():
        shutil.rmtree(folder)
    anat = folder / "sub-template" / "anat"
    anat.mkdir(parents=True)
    (folder / "dataset_description.json").write_text(
        json.dumps({"Name": "timing", "BIDSVersion": "1.10.0"}) + "\n")
    (folder / "participants.tsv").write_text("participant_id\nsub-template\n")
    shutil.copy(template, anat / "sub-template_T2w.nii.gz")
    return folder


def time_both(args, ants) -> dict:
    template = args.timing
    work = args.timing_work or Path(tempfile.mkdtemp(prefix="atropos-timing-"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {"template": str(template)}
    report["atropos_load_before"] = load_text()
    start = time.perf_counter()
    image, zooms, affine = load_t2w(template)
    mask = image > 0
    tissues = atropos_tissues(ants, image, zooms, mask, order=args.order, mrf=args.mrf,
                              convergence=args.convergence, n4=args.n4)
    nib.save(nib.Nifti1Image(tissues, affine), work / "atropos_dseg.nii.gz")
    report["atropos_seconds"] = time.perf_counter() - start
    report["atropos_load_after"] = load_text()
    report["shape"] = list(image.shape)
    report["mask_voxels"] = int(mask.sum())
    bids = one_scan_bids(template, work / "bids")
    out = work / "out"
    if out.exists():
        shutil.rmtree(out)
    command = [sys.executable, "-m", "bids_infantseg", str(bids), str(out), "participant",
               "--model", args.model, "--nprocs", "1", "--omp-nthreads", "1"]
    report["ours_command"] = " ".join(command[1:])
    report["ours_load_before"] = load_text()
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    report["ours_seconds"] = time.perf_counter() - start
    report["ours_load_after"] = load_text()
    if done.returncode != 0:
        raise AccuracyError(f"participant level failed ({done.returncode}): "
                            f"{done.stderr[-2000:]}")
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bids_dir", type=Path, nargs="?", help="BIDS dataset of T2w images")
    parser.add_argument("labels_dir", type=Path, nargs="?",
                        help="derivatives folder of manual _dseg")
    parser.add_argument("--map", type=Path, help='JSON {"manual index": DrawEM9 index}')
    parser.add_argument("--labels-desc", help="only manual dseg files with this desc")
    parser.add_argument("--ours", type=Path,
                        help="bids_infantseg participant outputs of the same scans")
    parser.add_argument("--order", type=parse_order, default=parse_order("csf,wm,gm"),
                        help="tissues by class mean intensity, brightest first: csf,wm,gm "
                             "(newborn, fetal T2w; default) or csf,gm,wm (past ~9 months)")
    parser.add_argument("--n4", action="store_true",
                        help="N4 bias correction in the mask first (timed with Atropos)")
    parser.add_argument("--mrf", default="[0.3,1x1x1]",
                        help="Atropos MRF [smoothing,radius] (ANTs default)")
    parser.add_argument("--convergence", default="[5,0.001]",
                        help="Atropos [iterations,threshold] (ANTs default)")
    parser.add_argument("--threads", type=int, default=1, help="ITK threads (default 1)")
    parser.add_argument("--results", type=Path, help="write per_scan.tsv and table.md here")
    parser.add_argument("--timing", type=Path, metavar="TEMPLATE",
                        help="time Atropos and the participant level on this image")
    parser.add_argument("--timing-work", type=Path, help="folder for the timing runs")
    parser.add_argument("--model", default="default", help="model of the timed participant run")
    args = parser.parse_args(argv)
    if args.timing is None and (args.bids_dir is None or args.labels_dir is None):
        parser.error("BIDS_DIR and LABELS_DIR are needed unless --timing is given")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ants = import_ants(args.threads)
    print(f"Atropos: kmeans[3], MRF {args.mrf}, convergence {args.convergence}, "
          f"{'N4 first' if args.n4 else 'no N4'}, order (brightest first) "
          f"{','.join(args.order)}, ITK threads {args.threads}; {load_text()}")
    try:
        if args.bids_dir is not None:
            table = compare_scans(args, ants)
            text = markdown(table)
            print(text)
            if args.results:
                args.results.mkdir(parents=True, exist_ok=True)
                table.to_csv(args.results / "per_scan.tsv", sep="\t", index=False,
                             na_rep="n/a", float_format="%.4f")
                (args.results / "table.md").write_text(text)
        if args.timing is not None:
            report = time_both(args, ants)
            ratio = report["atropos_seconds"] / report["ours_seconds"]
            print(f"timing on {report['template']} {'x'.join(map(str, report['shape']))} "
                  f"({report['mask_voxels']} mask voxels):")
            print(f"  Atropos{' + N4' if args.n4 else ''}: {report['atropos_seconds']:.1f} s "
                  f"[{report['atropos_load_before']} -> {report['atropos_load_after']}]")
            print(f"  ours (whole participant level, one process, one thread): "
                  f"{report['ours_seconds']:.1f} s "
                  f"[{report['ours_load_before']} -> {report['ours_load_after']}]")
            print(f"  Atropos / ours = {ratio:.2f}")
            if args.results:
                args.results.mkdir(parents=True, exist_ok=True)
                (args.results / "timing.json").write_text(json.dumps(report, indent=2) + "\n")
    except (AccuracyError, OSError, ValueError) as exc:
        print(f"atropos_baseline: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
