"""Training throughput (2D slices per second) of the train level on this machine's CPU.

    python benchmarks/train_throughput.py BIDS_DIR LABELS_DIR OUT_DIR [--threads 1 2]
        [--slices 128] [--batch 8] [--pretrained drawem9-synth-starter]

Fine-tunes the pretrained model (default: the bundled one) for one stage I epoch (the new
classifier alone) and one stage II epoch (all layers) of ``--slices`` slices, one view,
without cross-validation, once per thread count, and reads each epoch's slices, wall time and
CPU time from the run's records. Slice loading and augmentation run in the training process
(``--nprocs 1``), so they are part of the cost. On a shared machine wall time depends on the
other load; CPU time per slice does much less. Writes ``OUT_DIR/throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch


def run(bids: Path, labels: Path, out: Path, *, threads: int, slices: int, batch: int,
        pretrained: str, participants: list[str]) -> list[dict]:
    target = out / f"threads-{threads}"
    args = [sys.executable, "-m", "bids_infantseg", str(bids), str(target), "train",
            "--labels", str(labels), "--pretrained", pretrained, "--cv", "none",
            "--views", "axial", "--epochs-classifier", "1", "--epochs-all", "1",
            "--max-slices-per-epoch", str(slices), "--batch-size", str(batch),
            "--nprocs", "1", "--omp-nthreads", str(threads), "-w", str(out / "work"),
            "--model-name", f"throughput-{threads}"]
    if participants:
        args += ["--participant-label", *participants]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    (out / f"log-{threads}.txt").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"train failed ({done.returncode}); see {out}/log-{threads}.txt")
    (unit,) = (out / "work" / "train").glob(f"throughput-{threads}-*/final/lr-*/axial/done.json")
    history = json.loads(unit.read_text())["history"]
    return [{"threads": threads, "stage": "I (classifier)" if h["stage"] == "classifier"
             else "II (all layers)", "slices": h["slices"], "seconds": h["seconds"],
             "cpu_seconds": h["cpu_seconds"],
             "slices_per_s": round(h["slices"] / h["seconds"], 2),
             "slices_per_cpu_s": round(h["slices"] / h["cpu_seconds"], 2)} for h in history]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bids", type=Path)
    parser.add_argument("labels", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--slices", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--pretrained", default="drawem9-synth-starter")
    parser.add_argument("--participants", nargs="*", default=[])
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [row for threads in args.threads
            for row in run(args.bids, args.labels, args.out, threads=threads,
                           slices=args.slices, batch=args.batch, pretrained=args.pretrained,
                           participants=args.participants)]
    result = {"rows": rows, "cpu": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "load_average": os.getloadavg(),
              "torch": torch.__version__, "batch": args.batch,
              "model": args.pretrained}
    (args.out / "throughput.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'threads':>7} {'stage':16} {'slices':>6} {'wall s':>7} {'cpu s':>7} "
          f"{'slices/s':>9} {'slices/cpu-s':>12}")
    for r in rows:
        print(f"{r['threads']:7d} {r['stage']:16} {r['slices']:6d} {r['seconds']:7.1f} "
              f"{r['cpu_seconds']:7.1f} {r['slices_per_s']:9.2f} {r['slices_per_cpu_s']:12.2f}")
    print(f"load average during the runs: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
