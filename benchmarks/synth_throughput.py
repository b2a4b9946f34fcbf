"""Synthetic training data: generator throughput and the share of training spent waiting.

    BIDS_INFANTSEG_DATA=../shared/data python benchmarks/synth_throughput.py \
        --config configs/drawem9-synth-starter.json [--volumes 4] [--steps 24] [--workers 0 1]
    BIDS_INFANTSEG_DATA=../shared/data python benchmarks/synth_throughput.py \
        --config configs/drawem9-synth-starter.json --compare main [--rounds 2] [--threads 1]

1. Volumes per second of ``train.data.draw_volume`` on the bundled model's grid, per source
   kind of the configuration (procedural heads, fetal atlases, label maps), one process,
   ``--threads`` torch threads (default one); the first draw of each file (loading and
   preparing it) is not counted. With ``--compare REF`` (a commit, branch or folder of the
   package's source tree) only the generator is measured, for this tree and for REF (checked
   out in a temporary ``git worktree``), each in its own process with the same thread count,
   alternating over ``--rounds`` so both see the same machine load; it prints each one's
   volumes/s per source, the configuration's weighted mix, and new/old ratios.
2. ``--steps`` training steps of the bundled architecture (fresh weights, Adam, QuickNAT's
   loss; one batch per view per step), with the volumes drawn in the training process
   (``--workers 0``, as before this benchmark existed) or ahead in worker processes: wall
   time, time ``SliceSampler.batch`` waited for volumes, and that share of the wall time.

Torch runs one thread (the training default on a 2-core machine). On a loaded machine the
figures move; compare runs made side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bids_infantseg.model.architectures import build_network
from bids_infantseg.model.card import load_model
from bids_infantseg.synth.sources import SourceMix
from bids_infantseg.train.data import SliceSampler, SynthSource, draw_volume
from bids_infantseg.train.losses import median_frequency_weights, quicknat_loss


def generator_seconds(mix: SourceMix, card, volumes: int) -> dict[str, float]:
    """Seconds to draw ``volumes`` volumes per source (after one untimed warm-up draw of each
    anatomy drawn)."""
    seconds = {}
    for source in mix.sources:
        rng = np.random.default_rng(0)
        for anatomy in source.anatomies[:volumes]:  # warm-up: loading and preparing files
            draw_volume(card, SynthSource(mix), rng, age_months=3.0, anatomy=anatomy)
        start = time.perf_counter()
        for i in range(volumes):
            anatomy = source.anatomies[i % len(source.anatomies)]
            draw_volume(card, SynthSource(mix, skull_strip=0.5), rng,
                        age_months=float(rng.uniform(0, 12)), anatomy=anatomy)
        seconds[source.name] = time.perf_counter() - start
    return seconds


def generator_rates(mix: SourceMix, card, volumes: int) -> dict[str, float]:
    """Volumes per second per source."""
    return {name: volumes / s for name, s in generator_seconds(mix, card, volumes).items()}


def mix_rate(mix: SourceMix, rates: dict[str, float]) -> float:
    """Volumes per second of the configuration's mixture (sources drawn by weight)."""
    weights = {s.name: s.weight for s in mix.sources}
    return sum(weights.values()) / sum(w / rates[name] for name, w in weights.items())


def source_tree(ref: str, scratch: Path) -> Path:
    """A folder holding the package at ``ref``: the folder itself, or a detached ``git
    worktree`` of the commit in ``scratch``."""
    if Path(ref).is_dir():
        return Path(ref).resolve()
    repo = Path(__file__).resolve().parents[1]
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", "-q",
                    str(scratch / "tree"), ref], check=True)
    return scratch / "tree"


def compare(args: argparse.Namespace) -> int:
    """This tree's generator against ``args.compare``'s, side by side (see the docstring)."""
    here = Path(__file__).resolve()
    mix = SourceMix.load(args.config)
    with tempfile.TemporaryDirectory() as scratch:
        trees = {"new": here.parents[1], "old": source_tree(args.compare, Path(scratch))}
        totals = {name: {} for name in trees}
        try:
            for _ in range(args.rounds):
                for name, tree in (("old", trees["old"]), ("new", trees["new"])):
                    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS":
                           str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
                    out = subprocess.run(
                        [sys.executable, str(here), "--config", str(args.config), "--model",
                         args.model, "--volumes", str(args.volumes), "--threads",
                         str(args.threads), "--seconds-json"], env=env, check=True,
                        capture_output=True, text=True).stdout
                    for source, seconds in json.loads(out.splitlines()[-1]).items():
                        totals[name][source] = totals[name].get(source, 0.0) + seconds
        finally:
            if not Path(args.compare).is_dir():
                subprocess.run(["git", "-C", str(here.parents[1]), "worktree", "remove",
                                "--force", str(trees["old"])], check=False)
    volumes = args.volumes * args.rounds
    rates = {name: {s: volumes / t for s, t in seconds.items()}
             for name, seconds in totals.items()}
    print(f"generator, {args.threads} thread(s), {volumes} volumes per source each; "
          f"old = {args.compare}, new = this tree")
    for source in rates["new"]:
        old, new = rates["old"][source], rates["new"][source]
        print(f"  {source:<22} old {old:6.3f} volumes/s  new {new:6.3f} volumes/s  "
              f"ratio {new / old:5.2f}")
    old, new = mix_rate(mix, rates["old"]), mix_rate(mix, rates["new"])
    print(f"  {'mix (config weights)':<22} old {old:6.3f} volumes/s  new {new:6.3f} volumes/s  "
          f"ratio {new / old:5.2f}")
    return 0


def training_wait(mix: SourceMix, card, steps: int, workers: int) -> dict[str, float]:
    """Wall seconds of ``steps`` training steps and the seconds spent waiting for volumes."""
    torch.manual_seed(0)
    net = build_network(card.architecture)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    data = SliceSampler(card, SynthSource(mix, skull_strip=0.5), seed=0, workers=workers)
    weights = torch.from_numpy(median_frequency_weights(np.ones(len(card.labels))))
    try:
        data.batch("axial", 1)  # fill the pool: the same start-up cost either way
        data.wait_seconds = 0.0
        start = time.perf_counter()
        for _ in range(steps):
            for view in card.views:
                images, targets = data.batch(view, 8)
                loss = quicknat_loss(net(images), targets, weights, 2.0)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        wall = time.perf_counter() - start
    finally:
        data.close()
    return {"wall_s": wall, "wait_s": data.wait_seconds, "share": data.wait_seconds / wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--model", default="default")
    parser.add_argument("--volumes", type=int, default=4, help="timed volumes per source")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--compare", metavar="REF",
                        help="generator only: this tree against a commit or source folder")
    parser.add_argument("--rounds", type=int, default=2, help="alternations with --compare")
    parser.add_argument("--seconds-json", action="store_true",
                        help="generator only: print seconds per source as JSON (--compare)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.compare:
        return compare(args)
    card = load_model(args.model).card
    mix = SourceMix.load(args.config)
    if args.seconds_json:
        print(json.dumps(generator_seconds(mix, card, args.volumes)))
        return 0
    print(f"grid {card.grid_shape} at {card.voxel_size_mm} mm, {card.architecture.num_filters} "
          f"filters, batch 8 per view")
    for name, rate in generator_rates(mix, card, args.volumes).items():
        print(f"generator  {name:<22} {rate:6.3f} volumes/s  ({1 / rate:5.2f} s/volume)")
    for workers in args.workers:
        r = training_wait(mix, card, args.steps, workers)
        print(f"training   workers={workers}  {args.steps} steps {r['wall_s']:7.1f} s  "
              f"waiting for data {r['wait_s']:6.1f} s  ({100 * r['share']:4.1f}%)  "
              f"{args.steps / r['wall_s']:.3f} steps/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
