"""Peak RAM of the segment and restore steps per model-grid size, each in a fresh process.

    python benchmarks/memory.py [--model default] [--grids 128 192 256] [--native 320]
                                [--batch 8] [--compile never]

For each grid (a cube of side N at the model's voxel size, the model's own weights: the
network is fully convolutional) a child process does what the segment step does (predict
with per-view labels, probabilities written as float16 ``.npy`` a class at a time), and
another what the restore step does (float16 probabilities resampled onto a native grid of
``--native`` voxels per side, argmax). The volume is a smooth ellipsoidal 'head' filling
about half of the grid, so empty slices are skipped as on a real scan. Printed: peak RSS of
each process, the RSS of a process that only imports torch and the package, the size of
the all-class float32 accumulator, and the seconds each step took.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def peak_mib() -> float:
    """This process's peak resident memory. Not ``ru_maxrss``: a child started by fork and
    exec inherits its parent's maximum, so it would report the parent's size."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def head(side: int) -> np.ndarray:
    """An ellipsoid of smooth intensities, about half the grid's width."""
    axes = np.linspace(-1, 1, side, dtype=np.float32)
    x, y, z = np.meshgrid(axes, axes, axes, indexing="ij")
    r = (x / 0.55) ** 2 + (y / 0.65) ** 2 + (z / 0.5) ** 2
    return np.where(r < 1, 0.5 + 0.5 * np.cos(6 * x) * np.sin(5 * y), 0).astype(np.float32)


def child(step: str, args: argparse.Namespace, side: int, folder: Path) -> dict:
    import torch

    from bids_infantseg.core.conform import Grid, restore_labels
    from bids_infantseg.core.inference import predict_with_qc
    from bids_infantseg.interfaces.segmentation import save_probabilities
    from bids_infantseg.model.card import load_model

    torch.set_num_threads(1)
    model = load_model(args.model)
    model.card.grid_shape = (side, side, side)
    probs_file = folder / f"probs{side}.npy"
    began = time.perf_counter()
    if step == "segment":
        result = predict_with_qc(model, head(side), batch_size=args.batch, compile=args.compile)
        save_probabilities(str(probs_file), result.probs)
    elif step == "restore":
        voxel = model.card.voxel_size_mm
        grid = Grid((side,) * 3, np.diag([voxel] * 3 + [1.0]))
        native_voxel = voxel * side / args.native
        native = np.diag([native_voxel] * 3 + [1.0])
        probs = np.load(probs_file, mmap_mode="r")
        restore_labels(probs, grid, (args.native,) * 3, native, model.card.labels.indices)
    return {"seconds": time.perf_counter() - began,
            "peak_mib": peak_mib()}


def run_child(step: str, args: argparse.Namespace, side: int, folder: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", step, "--grids", str(side), "--folder",
           str(folder), "--model", args.model, "--native", str(args.native), "--batch",
           str(args.batch), "--compile", args.compile]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--grids", nargs="+", type=int, default=[128, 192, 256])
    parser.add_argument("--native", type=int, default=320,
                        help="native grid side for the restore step (the MIT templates')")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--compile", choices=("never", "always"), default="never")
    parser.add_argument("--child", choices=("segment", "restore", "import"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "import":
        import torch  # noqa: F401

        import bids_infantseg.interfaces.segmentation  # noqa: F401
        print(json.dumps({"seconds": 0.0,
                          "peak_mib": peak_mib()}))
        return 0
    if args.child:
        print(json.dumps(child(args.child, args, args.grids[0], args.folder)))
        return 0

    from bids_infantseg.model.card import read_card, resolve_model_path

    classes = len(read_card(resolve_model_path(args.model)).labels)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        base = run_child("import", args, args.grids[0], Path(tmp))["peak_mib"]
        print(f"model {args.model}, {classes} classes, batch {args.batch}, compile "
              f"{args.compile}, restore onto {args.native}^3; import alone {base:.0f} MiB")
        print(f"{'grid':>6}{'float32 acc MiB':>16}{'segment MiB':>12}{'segment s':>10}"
              f"{'restore MiB':>12}{'restore s':>10}")
        for side in args.grids:
            seg = run_child("segment", args, side, Path(tmp))
            res = run_child("restore", args, side, Path(tmp))
            acc = classes * side ** 3 * 4 / 2 ** 20
            print(f"{side:>5}^3{acc:>16.0f}{seg['peak_mib']:>12.0f}{seg['seconds']:>10.1f}"
                  f"{res['peak_mib']:>12.0f}{res['seconds']:>10.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
