"""Network-only inference speed on the CPU: eager fp32 against the fast paths, side by side.

    python benchmarks/inference.py [--model default] [--paper] [--paths eager compiled ...]
                                   [--batch 1 8] [--threads 1] [--rounds 5]

For the model's own network (and with ``--paper`` for QuickNAT as published: 64 filters on
256x256 slices, random weights, which do not change the speed) every path runs the same
batches of random slices, interleaved round by round so that load from other processes hits
all of them alike; medians are printed. Paths (``bids_infantseg.core.inference``'s own runners
where the app uses them):

    eager          fp32 under inference_mode (the baseline)
    no-grad        fp32 under no_grad instead of inference_mode
    channels-last  eager, weights and input in channels-last memory format
    bf16           eager under CPU bf16 autocast (changes the numbers; shown for reference)
    compiled       torch.compile, inductor, frozen weights (the app's fast path; inductor
                   picks its own memory layouts)

Printed per path: slices/s (wall), the ratio to eager in wall time and in CPU time (the
latter less sensitive to other load on the machine), seconds per view and per volume (all
slices of a cubic grid; the app skips empty slices, so real scans run faster), compile
seconds (first call, in this process: a warm on-disk inductor cache makes it shorter) and
peak RSS of a fresh process that builds the path and runs one batch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bids_infantseg.core.inference import Placement, _compiled, _eager
from bids_infantseg.model.card import load_model
from bids_infantseg.model.quicknat import QuickNAT, QuickNATConfig

CPU = Placement(torch.device("cpu"), torch.device("cpu"))
PATHS = ("eager", "no-grad", "channels-last", "bf16", "compiled")


def peak_mib() -> float:
    """This process's peak resident memory. Not ``ru_maxrss``: a child started by fork and
    exec inherits its parent's maximum, so it would report the parent's size."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def network(model: str, paper: bool) -> tuple[torch.nn.Module, int, str]:
    """One view's network, its slice size and a description."""
    if paper:
        torch.manual_seed(0)
        cfg = QuickNATConfig(num_classes=10, num_filters=64)
        return QuickNAT(cfg).eval(), 256, "QuickNAT as published (64 filters), 256x256 slices"
    loaded = load_model(model)
    side = loaded.card.grid_shape[0]
    name = f"{loaded.card.name} ({loaded.card.architecture.num_filters} filters)"
    return next(iter(loaded.nets.values())), side, f"{name}, {side}x{side} slices"


def build(path: str, net: torch.nn.Module, batch: int, side: int) -> Callable:
    """The path's runner for ``(batch, 1, side, side)`` inputs; compiles where it says so."""
    if path == "compiled":
        with torch.inference_mode():
            run = _compiled(net, CPU, batch, (side, side))
    elif path == "channels-last":
        cl = _eager(net, CPU).to(memory_format=torch.channels_last)

        def run(x: torch.Tensor) -> torch.Tensor:
            return cl(x.contiguous(memory_format=torch.channels_last))
    else:
        run = _eager(net, CPU)
    if path == "no-grad":
        return torch.no_grad()(run)
    if path == "bf16":
        return torch.inference_mode()(torch.autocast("cpu", dtype=torch.bfloat16)(run))
    return torch.inference_mode()(run)


def child(args: argparse.Namespace) -> int:
    """Peak RSS of one path, built and run once in this fresh process."""
    torch.set_num_threads(args.threads[0])
    net, side, _ = network(args.model, args.paper)
    run = build(args.child, net, args.batch[0], side)
    run(torch.rand(args.batch[0], 1, side, side))
    peak = peak_mib()
    print(json.dumps({"peak_mib": peak}))
    return 0


def peak_rss(args: argparse.Namespace, path: str, batch: int, threads: int) -> float:
    cmd = [sys.executable, __file__, "--child", path, "--model", args.model, "--batch",
           str(batch), "--threads", str(threads)] + (["--paper"] if args.paper else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mib"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--paper", action="store_true",
                        help="QuickNAT as published: 64 filters, 256x256 slices")
    parser.add_argument("--paths", nargs="+", choices=PATHS,
                        default=["eager", "channels-last", "compiled"])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--threads", nargs="+", type=int, default=[1])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the peak-RSS child processes")
    parser.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    net, side, description = network(args.model, args.paper)
    print(f"{description}; torch {torch.__version__}; {args.rounds} interleaved rounds")
    print(f"{'threads':>7}{'batch':>6} {'path':<15}{'slices/s':>9}{'x eager':>8}{'x cpu':>8}"
          f"{'s/view':>8}"
          f"{'s/volume':>9}{'compile s':>10}{'peak MiB':>9}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batch:
            x = torch.rand(batch, 1, side, side)
            runners, compile_s = {}, {}
            for path in args.paths:
                began = time.perf_counter()
                runners[path] = build(path, net, batch, side)
                runners[path](x)  # warm-up (eager) or compile (compiled)
                compile_s[path] = time.perf_counter() - began
            seconds: dict[str, list[float]] = {p: [] for p in args.paths}
            cpu: dict[str, list[float]] = {p: [] for p in args.paths}
            for _ in range(args.rounds):
                for path, run in runners.items():
                    began, began_cpu = time.perf_counter(), time.process_time()
                    run(x)
                    seconds[path].append(time.perf_counter() - began)
                    cpu[path].append(time.process_time() - began_cpu)
            eager_rate = batch / statistics.median(seconds[args.paths[0]])
            eager_cpu = statistics.median(cpu[args.paths[0]])
            for path in args.paths:
                rate = batch / statistics.median(seconds[path])
                cpu_ratio = eager_cpu / statistics.median(cpu[path])
                compiled = f"{compile_s[path]:>10.1f}" if path == "compiled" else f"{'-':>10}"
                peak = (f"{peak_rss(args, path, batch, threads):>9.0f}" if args.memory
                        else f"{'-':>9}")
                print(f"{threads:>7}{batch:>6} {path:<15}{rate:>9.2f}{rate / eager_rate:>7.2f}x"
                      f"{cpu_ratio:>7.2f}x{side / rate:>8.1f}{3 * side / rate:>9.1f}{compiled}"
                      f"{peak}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
