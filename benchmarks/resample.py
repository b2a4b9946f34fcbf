"""Conform and restore: the torch path of ``bids_infantseg.core.conform`` against scipy.ndimage.

Why: resampling runs twice per scan and, on a CPU, can cost as much as the network. Each
case runs in a fresh process so its peak RSS is its own; "extra" is the peak above what the
process held once its inputs existed.

    python -m benchmarks.resample [--threads N] [--repeat N]   (from the repository root)
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time

import numpy as np

NATIVE_SHAPE = (290, 290, 203)
GRID_SHAPE = (128, 128, 128)
VOXEL_MM = 1.3
CLASSES = 10
INTENSITY = {"method": "percentile", "lower": 0.5, "upper": 99.5}


def _native_affine() -> np.ndarray:
    """0.6 x 0.6 x 0.8 mm, LAS-stored and tilted 10 degrees about x, as scanners write."""
    tilt = np.deg2rad(10)
    turn = np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
    affine = np.eye(4)
    affine[:3, :3] = turn @ np.diag([-0.6, 0.6, 0.8])
    affine[:3, 3] = -affine[:3, :3] @ (np.array(NATIVE_SHAPE) - 1) / 2
    return affine


def _inputs(step: str):
    from bids_infantseg.core.conform import model_grid

    rng = np.random.default_rng(0)
    affine = _native_affine()
    grid = model_grid(NATIVE_SHAPE, affine, VOXEL_MM, GRID_SHAPE)
    if step == "conform":
        return rng.random(NATIVE_SHAPE, dtype=np.float32) * 1000, affine, grid
    logits = rng.random((CLASSES, *GRID_SHAPE), dtype=np.float32) * 4
    probs = np.exp(logits)
    probs /= probs.sum(0)
    return probs.astype(np.float16), affine, grid


def _torch(step: str, data, affine, grid):
    from bids_infantseg.core.conform import conform, restore_labels

    if step == "conform":
        return conform(data, affine, VOXEL_MM, GRID_SHAPE, intensity=INTENSITY)[0]
    return restore_labels(data, grid, NATIVE_SHAPE, affine, np.arange(CLASSES))


def _scipy(step: str, data, affine, grid):
    from scipy import ndimage

    from bids_infantseg.core.conform import normalise_intensity

    if step == "conform":
        matrix = np.linalg.inv(affine) @ grid.affine
        out = ndimage.affine_transform(data, matrix, output_shape=grid.shape, order=1,
                                       cval=0.0, output=np.float32)
        return normalise_intensity(out, INTENSITY)
    matrix = np.linalg.inv(grid.affine) @ affine
    native = np.stack([ndimage.affine_transform(p.astype(np.float32), matrix,
                                                output_shape=NATIVE_SHAPE, order=1, cval=0.0,
                                                output=np.float32) for p in data])
    return np.arange(CLASSES, dtype=np.int16)[np.argmax(native, axis=0)]


def _case(args: tuple[str, str, int, int]) -> tuple[float, float, float]:
    """(best seconds, peak RSS MiB, peak RSS above the inputs MiB) of one step, one library."""
    library, step, threads, repeat = args
    import torch

    torch.set_num_threads(threads)
    inputs = _inputs(step)
    run = _torch if library == "torch" else _scipy
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run(step, *inputs)
        best = min(best, time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return best, peak, peak - before


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (scipy uses 1)")
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs")
    args = parser.parse_args(argv)
    print(f"native {NATIVE_SHAPE}, model grid {GRID_SHAPE} at {VOXEL_MM} mm, {CLASSES} classes "
          f"(float16 probabilities); torch {args.threads} thread(s), best of {args.repeat}")
    print(f"{'step':8} {'torch s':>8} {'scipy s':>8} {'speed-up':>8}   "
          f"{'torch peak/extra MiB':>21} {'scipy peak/extra MiB':>21}")
    context = multiprocessing.get_context("spawn")
    for step in ("conform", "restore"):
        results = {}
        for library in ("torch", "scipy"):
            with context.Pool(1) as pool:
                results[library] = pool.apply(_case, ((library, step, args.threads,
                                                       args.repeat),))
        (t_s, t_peak, t_extra), (s_s, s_peak, s_extra) = results["torch"], results["scipy"]
        print(f"{step:8} {t_s:8.2f} {s_s:8.2f} {s_s / t_s:7.1f}x   "
              f"{t_peak:13.0f} / {t_extra:5.0f} {s_peak:13.0f} / {s_extra:5.0f}")


if __name__ == "__main__":
    main()
