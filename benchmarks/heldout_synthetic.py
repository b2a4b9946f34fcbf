"""Dice of models on held-out synthetic volumes, per held-out source, age and label.

    BIDS_INFANTSEG_DATA=../shared/data python benchmarks/heldout_synthetic.py \
        --config configs/drawem9-synth-starter.json --models default /path/to/other \
        [--procedural 2] [--skull-strip] [--json OUT.json]

Every model is scored on the same volumes: ``--procedural`` procedural heads plus one head
from each held-out file of the configuration (its ``held_out`` lists), at 0, 6 and 12
months, drawn from the evaluation seed stream training never uses (``train.evaluate``).
Prints one Markdown table row per model, source and age.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bids_infantseg.model.card import load_model
from bids_infantseg.synth.sources import SourceMix
from bids_infantseg.train.evaluate import evaluate_synthetic, heldout_cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=["default"])
    parser.add_argument("--procedural", type=int, default=2)
    parser.add_argument("--skull-strip", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    held_out = SourceMix.load(args.config, held_out=True).sources
    cases = heldout_cases(held_out, args.procedural)
    results = {}
    header = None
    for spec in args.models:
        model = load_model(spec)
        name = f"{model.card.name} {model.card.version}"
        dice = evaluate_synthetic(model, cases, skull_strip=args.skull_strip)
        results[name] = dice
        for group, by_age in dice["heldout_synthetic_dice"].items():
            for age, scores in by_age.items():
                if header is None:
                    header = list(scores)
                    print("| model | source | age | " + " | ".join(header) + " |")
                    print("|---|---|---|" + "---:|" * len(header))
                print(f"| {name} | {group} | {age} | "
                      + " | ".join(f"{scores[k]:.3f}" for k in header) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
