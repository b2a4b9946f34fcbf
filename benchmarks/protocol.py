"""The validation protocol's tables and selection score for each model (docs/validation.md).

    BIDS_INFANTSEG_DATA=../shared/data python benchmarks/protocol.py MODEL [MODEL ...] \
        --config configs/drawem9-synth-starter.json --cache WORK [--templates DIR] \
        [--heads 1] [--no-em] [--threads 1] [--tsv OUT.tsv]

``MODEL`` is a bundled model's name or a model folder. Every model is scored on the same
volumes (drawn or conformed once into ``WORK``, reused by later runs). Prints per model the
DrawEM9 tissues per band and source (Dice, and the volume ratio predicted / reference in
brackets), the template checks, the aseg structures (aseg models), the score's components
per band and the score S; ``--tsv`` writes every row of every model's table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bids_infantseg.model.card import ModelError, load_model
from bids_infantseg.synth.sources import SourceError
from bids_infantseg.train.validation import (
    BANDS,
    DEEP_NUCLEI,
    TISSUES,
    Protocol,
    ProtocolError,
    components,
    selection_score,
    summary,
    template_checks,
)


def _cell(dice: float, ratio: float) -> str:
    text = "" if np.isnan(dice) else f"{dice:.3f}"
    if not np.isnan(ratio):
        text += f" ({ratio:.2f})" if text else f"({ratio:.2f})"
    return text or "-"


def tissue_table(name: str, table: pd.DataFrame) -> str:
    """Markdown: one row per band and source, one column per DrawEM9 tissue."""
    rows = summary(table[table.label_set == "drawem9"])
    lines = [f"| {name} | band | source | " + " | ".join(TISSUES) + " |",
             "|---|---|---|" + "---:|" * len(TISSUES)]
    for (band, source), group in rows.groupby(["band", "source"], sort=False):
        by = group.set_index("structure")
        lines.append(f"| | {band} | {source} | " + " | ".join(
            _cell(by.dice.get(t, np.nan), by.ratio.get(t, np.nan)) for t in TISSUES) + " |")
    return "\n".join(lines)


def aseg_table(name: str, table: pd.DataFrame) -> str:
    """Markdown: aseg structures' Dice (sides averaged) per band; deep nuclei marked."""
    rows = summary(table[table.label_set == "aseg"])
    if rows.empty:
        return ""
    structures = list(dict.fromkeys(rows.structure))
    lines = [f"| {name}, aseg | " + " | ".join(
        f"**{s}**" if s in DEEP_NUCLEI else s for s in structures) + " |",
        "|---|" + "---:|" * len(structures)]
    for band, group in rows.groupby("band", sort=False):
        by = group.set_index("structure").dice
        lines.append(f"| {band} | " + " | ".join(
            "-" if np.isnan(by.get(s, np.nan)) else f"{by[s]:.2f}" for s in structures) + " |")
    return "\n".join(lines)


def checks_table(name: str, table: pd.DataFrame) -> str:
    checks = template_checks(table)
    lines = [f"| {name} | " + " | ".join(dict.fromkeys(checks.structure)) + " |",
             "|---|" + "---:|" * checks.structure.nunique()]
    for case, group in checks.groupby("case", sort=False):
        lines.append(f"| {case} | " + " | ".join(
            f"{r.pred_ml:.0f}/{r.ref_ml:.0f}{'' if r.passes else ' ✗'}"
            if r.structure != "Cbm" else f"{r.pred_ml:.1f}{'' if r.passes else ' ✗'}"
            for r in group.itertuples()) + " |")
    passed = int(checks.passes.sum())
    lines.append(f"\n{passed} of {len(checks)} template checks pass (mL predicted/aseg; "
                 "✗ outside 0.5-2x, cerebellum ✗ at 5 mL or more).")
    return "\n".join(lines)


def components_table(scored: dict[str, pd.DataFrame]) -> str:
    parts = ["syn_dice", "syn_hip", "template", "atlas", "band_score"]
    lines = ["| model | band | " + " | ".join(parts) + " |", "|---|---|" + "---:|" * len(parts)]
    for name, table in scored.items():
        frame = components(table)
        for band, _ in BANDS:
            lines.append(f"| {name} | {band} | " + " | ".join(
                "-" if np.isnan(frame.loc[band, p]) else f"{frame.loc[band, p]:.3f}"
                for p in parts) + " |")
        lines.append(f"| **{name}** | **S** | | | | | **{selection_score(table):.3f}** |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--config", type=Path, required=True,
                        help="training configuration naming the held-out files")
    parser.add_argument("--cache", type=Path, required=True,
                        help="folder for the drawn and conformed volumes")
    parser.add_argument("--templates", type=Path)
    parser.add_argument("--heads", type=int, default=1, help="synthetic heads per case")
    parser.add_argument("--no-em", dest="em", action="store_false",
                        help="score the network alone (default: EM refinement on)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tsv", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        protocol = Protocol.from_config(args.config, args.cache, args.templates,
                                        heads=args.heads, em=args.em)
        models = {spec: load_model(spec) for spec in args.models}
    except (ProtocolError, SourceError, ModelError, OSError) as exc:
        print(f"protocol: {exc}", file=sys.stderr)
        return 2
    scored = {}
    for spec, model in models.items():
        name = f"{model.card.name} {model.card.version}"
        if name in scored:  # two folders of one name and version: say which is which
            name = f"{name} ({spec})"
        began = time.perf_counter()
        score, table = protocol(model)
        scored[name] = table
        print(f"\n## {name}: S = {score:.3f} ({time.perf_counter() - began:.0f} s)\n")
        print(tissue_table(name, table))
        print()
        print(checks_table(name, table))
        extra = aseg_table(name, table)
        if extra:
            print()
            print(extra)
    print("\n## Score components\n")
    print(components_table(scored))
    if args.tsv:
        frame = pd.concat([t.assign(model=n) for n, t in scored.items()])
        partial = args.tsv.with_name(f".{args.tsv.name}.partial")
        frame.to_csv(partial, sep="\t", index=False)
        partial.replace(args.tsv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
