"""Leave-one-subject-out on the CC0 fetal atlases: fine-tuned from the bundled model vs from
scratch, to the atlases' own 8-label scheme (plus background).

    python benchmarks/train_atlas.py WORK_DIR [--scale-to-ml 400] [--epochs-classifier 2]
        [--epochs-all 3] [--max-slices-per-epoch 128] [--views axial] [--lr 1e-3]
        [--table-only]

Writes the BIDS copy (``benchmarks/fetal_atlas_bids.py``) to ``WORK_DIR/bids``, runs the
train level twice into ``WORK_DIR/out`` (``--pretrained drawem9-synth-starter`` and
``--pretrained none``, the same recipe otherwise, one thread each, both at once), then prints
the per-label Dice and accuracy (mean over the 15 held-out atlases) side by side and writes
``WORK_DIR/comparison.tsv``. ``--table-only`` only reads finished runs.

The defaults are a reduced recipe sized for a shared 2-CPU machine (~35 CPU-minutes for both
runs), not the published one (15 + 50 epochs over every slice, three views).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
RUNS = {"fine-tuned": "drawem9-synth-starter", "scratch": "none"}


def make_dataset(work: Path, scale_to_ml: float | None) -> Path:
    bids = work / "bids"
    if not (bids / "dataset_description.json").is_file():
        extra = ["--scale-to-ml", str(scale_to_ml)] if scale_to_ml else []
        subprocess.run([sys.executable, str(HERE / "fetal_atlas_bids.py"), str(bids), *extra],
                       check=True)
    return bids


def train(bids: Path, out: Path, args: argparse.Namespace) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    common = [str(bids), str(out), "train", "--labels", str(bids / "derivatives" / "manual"),
              "--views", args.views, "--cv", args.cv, "--epochs-classifier",
              str(args.epochs_classifier), "--epochs-all", str(args.epochs_all),
              "--max-slices-per-epoch", str(args.max_slices_per_epoch), "--batch-size", "8",
              "--lr", str(args.lr), "--seed", "0", "--nprocs", "1", "--omp-nthreads", "1"]
    jobs = []
    for name, pretrained in RUNS.items():
        log = (out.parent / f"{name}.log").open("w")
        jobs.append((name, log, subprocess.Popen(
            ["nice", "-n", "15", sys.executable, "-m", "bids_infantseg", *common,
             "--pretrained", pretrained], stdout=log, stderr=subprocess.STDOUT, env=env)))
    for name, log, job in jobs:
        if job.wait() != 0:
            raise SystemExit(f"{name} run failed; see {log.name}")


def table(out: Path) -> pd.DataFrame:
    models = {name: next((out / "models").glob(f"atlas-{'scratch' if p == 'none' else 'from-*'}"))
              for name, p in RUNS.items()}
    merged = None
    for name, folder in models.items():
        summary = pd.read_csv(folder / "cv" / "summary.tsv", sep="\t")
        part = summary[["index", "name", "scans", "dice_mean", "dice_sd", "accuracy_mean"]]
        part = part.rename(columns={c: f"{c}_{name}" for c in part.columns
                                    if c not in ("index", "name")})
        merged = part if merged is None else merged.merge(part, on=["index", "name"])
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--scale-to-ml", type=float, default=400.0,
                        help="brain size the atlases are scaled to (header only); 0: as is")
    parser.add_argument("--views", default="axial")
    parser.add_argument("--cv", default="loso")
    parser.add_argument("--epochs-classifier", type=int, default=2)
    parser.add_argument("--epochs-all", type=int, default=3)
    parser.add_argument("--max-slices-per-epoch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args(argv)
    out = args.work / "out"
    if not args.table_only:
        bids = make_dataset(args.work, args.scale_to_ml or None)
        train(bids, out, args)
    result = table(out)
    result.to_csv(args.work / "comparison.tsv", sep="\t", index=False, float_format="%.4f")
    shown = result[["index", "name", "dice_mean_fine-tuned", "dice_mean_scratch",
                    "accuracy_mean_fine-tuned", "accuracy_mean_scratch"]]
    print(shown.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    brain = result[result["index"] != 0]
    print(f"mean over the 8 brain labels: Dice fine-tuned "
          f"{brain['dice_mean_fine-tuned'].mean():.3f}, from scratch "
          f"{brain['dice_mean_scratch'].mean():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
