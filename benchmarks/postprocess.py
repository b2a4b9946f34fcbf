"""Seconds of the per-scan steps after the network: QC connected pieces and the HTML report.

On real-size scans (0.8 mm, 320^3) these steps, not the network, took most of a scan's time.
This times them on the outputs of a finished participant run, so two versions of the code
can be compared side by side on the same files (run once per version, e.g. with
``PYTHONPATH`` pointing at a checkout of the baseline):

    python benchmarks/postprocess.py BIDS_DIR OUTPUT_DIR [--repeats 3]

Prints, per scan, the best of ``--repeats`` runs of each step and the grid size.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import pandas as pd

from bids_infantseg.core import qc
from bids_infantseg.model.labels import DRAWEM9
from bids_infantseg.report.scan import scan_report


def best_of(repeats: int, step, *args, **kwargs) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return min(times)


def report(t2w_path: Path, dseg_path: Path, folder: Path, stem: str) -> None:
    """The report step as the workflow runs it: images and tables read inside the step."""
    qc_json = json.loads((folder / f"{stem}_desc-drawem9_qc.json").read_text())
    scan_report(title=stem, t2w=nib.load(t2w_path), dseg=nib.load(dseg_path), labels=DRAWEM9,
                volumes=pd.read_csv(folder / f"{stem}_desc-drawem9_volumes.tsv", sep="\t"),
                qc_table=pd.read_csv(folder / f"{stem}_desc-drawem9_qc.tsv", sep="\t",
                                     na_values="n/a"),
                qc_summary=qc_json["QC"], scan={"source image": stem},
                provenance={"model": "benchmark"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bids_dir", type=Path)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print("scan\tgrid\tqc_components_s\treport_s")
    for dseg_path in sorted(args.output_dir.rglob("*_space-T2w_desc-drawem9_dseg.nii.gz")):
        stem = dseg_path.name.split("_space-")[0]
        folder = dseg_path.parent
        t2w_path = next((args.bids_dir / folder.relative_to(args.output_dir)).glob(
            f"{stem}*_T2w.nii*"), None)
        if t2w_path is None:
            print(f"{stem}: no T2w in {args.bids_dir}; skipped", file=sys.stderr)
            continue
        dseg = nib.load(dseg_path)
        label_map = dseg.get_fdata(dtype="float32").astype("int16")
        pieces = best_of(args.repeats, qc.components, label_map, DRAWEM9)
        page = best_of(args.repeats, report, t2w_path, dseg_path, folder, stem)
        print(f"{stem}\t{'x'.join(map(str, dseg.shape))}\t{pieces:.2f}\t{page:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
