"""Synthetic training data: generator throughput and the share of training spent waiting.

    BIDS_INFANTSEG_DATA=../shared/data python benchmarks/synth_throughput.py \
        --config configs/drawem9-synth-starter.json [--volumes 4] [--steps 24] [--workers 0 1]

1. Volumes per second of ``train.data.draw_volume`` on the bundled model's grid, per source
   kind of the configuration (procedural heads, fetal atlases, label maps), one process, one
   thread; the first draw of each file (loading and preparing it) is not counted.
2. ``--steps`` training steps of the bundled architecture (fresh weights, Adam, QuickNAT's
   loss; one batch per view per step), with the volumes drawn in the training process
   (``--workers 0``, as before this benchmark existed) or ahead in worker processes: wall
   time, time ``SliceSampler.batch`` waited for volumes, and that share of the wall time.

Torch runs one thread (the training default on a 2-core machine). On a loaded machine the
figures move; compare runs made side by side.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bids_infantseg.model.architectures import build_network
from bids_infantseg.model.card import load_model
from bids_infantseg.synth.sources import SourceMix
from bids_infantseg.train.data import SliceSampler, SynthSource, draw_volume
from bids_infantseg.train.losses import median_frequency_weights, quicknat_loss


def generator_rates(mix: SourceMix, card, volumes: int) -> dict[str, float]:
    """Volumes per second per source (after one untimed warm-up draw per anatomy)."""
    rates = {}
    for source in mix.sources:
        rng = np.random.default_rng(0)
        for anatomy in source.anatomies:  # warm-up: file loading and preparation
            draw_volume(card, SynthSource(mix), rng, age_months=3.0, anatomy=anatomy)
        start = time.perf_counter()
        for i in range(volumes):
            anatomy = source.anatomies[i % len(source.anatomies)]
            draw_volume(card, SynthSource(mix, skull_strip=0.5), rng,
                        age_months=float(rng.uniform(0, 12)), anatomy=anatomy)
        rates[source.name] = volumes / (time.perf_counter() - start)
    return rates


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
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    card = load_model(args.model).card
    mix = SourceMix.load(args.config)
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
