"""Two-process CPU DistributedDataParallel (gloo) against one process, on the same epochs.

    python benchmarks/train_ddp.py BIDS_DIR LABELS_DIR OUT_DIR [--participants A B C]

Runs the train level twice from scratch on a small network (``--cv none``, the final
model only, same seed, same slices per epoch):

1. one process, batch ``2B``;
2. ``torchrun --nproc-per-node 2``, batch ``B`` per process (the same global batch: each rank
   takes half of every epoch's slices and DDP averages the gradients);
Prints the per-epoch losses of each, checks that the two ranks ended with identical
parameters, and compares the final weights (relative L2 distance) with each other and with
the initial weights both started from (rebuilt from the seed, as the train level draws
them), so the gap between the runs can be set against how far training moved. They are not
expected to be bit-identical: batch normalisation normalises each rank's half-batch with its own
statistics, and QuickNAT's loss normalises within each rank's batch before DDP averages.
Writes ``OUT_DIR/ddp.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bids_infantseg.model.architectures import build_network
from bids_infantseg.model.card import read_card
from bids_infantseg.model.views import VIEW_AXIS
from bids_infantseg.train.engine import seed_of

SMALL = {"num_filters": 8, "voxel_size_mm": 3.0, "grid_size": 64}


def train(bids: Path, labels: Path, out: Path, *, processes: int, batch: int, seed: int,
          epochs: int, slices: int, participants: list[str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    config = out / "config.json"
    config.write_text(json.dumps(SMALL))
    args = [str(bids), str(out), "train", "--labels", str(labels), "--pretrained", "none",
            "--cv", "none", "--views", "axial", "--epochs-all", str(epochs),
            "--max-slices-per-epoch", str(slices), "--batch-size", str(batch),
            "--seed", str(seed), "--config", str(config), "--nprocs", "1", "--omp-nthreads",
            "1"]
    if participants:
        args += ["--participant-label", *participants]
    if processes == 1:
        command = [sys.executable, "-m", "bids_infantseg", *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc-per-node", str(processes), "-m", "bids_infantseg", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    (out / "log.txt").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}); see {out}/log.txt")
    (unit,) = out.glob(".work/train/*/final/lr-*/axial/done.json")
    info = json.loads(unit.read_text())
    (model,) = out.glob("models/*/model.safetensors")
    return {"processes": processes, "batch_per_process": batch, "seed": seed,
            "wall_seconds": round(wall, 1), "history": info["history"],
            "rank_spread": info.get("rank_spread", 0.0), "weights": str(model)}


def initial_weights(model_file: str, seed: int, out: Path) -> str:
    """The weights a from-scratch final model starts from (seed key as in crossval.py)."""
    card = read_card(Path(model_file).parent)
    torch.manual_seed(seed_of(seed, 0, 0, VIEW_AXIS["axial"], 99))
    net = build_network(card.architecture)
    path = out / "initial.safetensors"
    save_file({f"axial.{k}": v.clone() for k, v in net.state_dict().items()}, str(path))
    return str(path)


def distance(a: str, b: str) -> float:
    """Relative L2 distance of the floating-point weights of two model files (to ``a``)."""
    x, y = load_file(a), load_file(b)
    num = sum(float(((x[k].double() - y[k].double()) ** 2).sum()) for k in x
              if x[k].is_floating_point())
    den = sum(float((x[k].double() ** 2).sum()) for k in x if x[k].is_floating_point())
    return (num / den) ** 0.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bids", type=Path)
    parser.add_argument("labels", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--participants", nargs="*", default=[])
    parser.add_argument("--batch", type=int, default=4, help="per process in the DDP run")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--slices", type=int, default=64, help="slices per epoch")
    args = parser.parse_args(argv)
    common = {"epochs": args.epochs, "slices": args.slices, "participants": args.participants}
    runs = {
        "one": train(args.bids, args.labels, args.out / "one", processes=1,
                     batch=2 * args.batch, seed=0, **common),
        "two": train(args.bids, args.labels, args.out / "two", processes=2, batch=args.batch,
                     seed=0, **common),
    }
    initial = initial_weights(runs["one"]["weights"], 0, args.out)
    result = {
        "runs": runs,
        "relative_distance_one_vs_two": distance(runs["one"]["weights"], runs["two"]["weights"]),
        "relative_distance_initial_vs_one": distance(initial, runs["one"]["weights"]),
        "relative_distance_initial_vs_two": distance(initial, runs["two"]["weights"]),
        "torch": torch.__version__,
    }
    (args.out / "ddp.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'run':16} {'procs':>5} {'batch':>5} {'epoch':>5} {'slices':>6} {'loss':>8} "
          f"{'s':>6} {'cpu s':>6}")
    for name, run in runs.items():
        for h in run["history"]:
            print(f"{name:16} {run['processes']:5d} {run['batch_per_process']:5d} "
                  f"{h['epoch']:5d} {h['slices']:6d} {h['loss']:8.4f} {h['seconds']:6.1f} "
                  f"{h.get('cpu_seconds', float('nan')):6.1f}")
    print(f"parameters differ between the DDP ranks by {runs['two']['rank_spread']:.3g}")
    print(f"relative L2 distance of the weights: 1 vs 2 processes "
          f"{result['relative_distance_one_vs_two']:.4f}; initial vs 1 process "
          f"{result['relative_distance_initial_vs_one']:.4f}; initial vs 2 processes "
          f"{result['relative_distance_initial_vs_two']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
