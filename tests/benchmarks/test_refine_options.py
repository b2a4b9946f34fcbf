"""benchmarks/refine_options.py: every option written out, gains against the baseline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from bids_infantseg.cli.main import build_parser
from bids_infantseg.core.refine import DEFAULTS

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location(
        "refine_options", ROOT / "benchmarks" / "refine_options.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_option_is_written_out_so_defaults_do_not_matter():
    bench = _load()
    assert set(bench.OFF) == set(DEFAULTS)
    for name, config in bench.CONFIGS.items():
        args = build_parser().parse_args(["bids", "out", "participant",
                                          *bench.flags(config)])
        for option in DEFAULTS:
            assert getattr(args, option) is bool(config.get(option)), (name, option)


def test_table_gives_gains_against_the_baseline():
    bench = _load()
    row = {abbreviation: 0.5 for abbreviation in bench.LABELS.values()}
    results = {"400 mL": {"baseline": row | {"brain mean": 0.5, "s/scan": 10.0},
                          "refine-em": row | {"brain mean": 0.525, "s/scan": 11.0}},
               "costs": {"network": 12.0, "EM refinement": 0.5}}
    text = bench.table(results)
    lines = [line for line in text.splitlines() if line.startswith("| 400 mL")]
    assert lines[0].endswith("| 0.500 | 10.0 |  |")
    assert lines[1].endswith("| 0.525 | 11.0 | +0.025 |")
    assert "EM refinement 0.50" in text
