"""benchmarks/protocol.py: the protocol's tables and score per model, and one-line errors."""

from __future__ import annotations

import pandas as pd

from tests.benchmarks.test_accuracy import _load
from tests.model_factory import make_tiny_model
from tests.train.protocol_data import write_protocol_data

protocol = _load("protocol")


def test_tables_and_score_for_each_model(tmp_path, capsys):
    config = write_protocol_data(tmp_path / "data")
    models = [str(make_tiny_model(tmp_path / f"model-{seed}", seed=seed)) for seed in (0, 1)]
    tsv = tmp_path / "table.tsv"
    assert protocol.main([*models, "--config", str(config), "--cache", str(tmp_path / "cache"),
                          "--tsv", str(tsv)]) == 0
    out = capsys.readouterr().out
    assert "## tiny-test 0.0.1: S = " in out and f"## tiny-test 0.0.1 ({models[1]}): S = " in out
    assert "| 0-3 | synthetic |" in out and "| 0-3 | atlas |" in out
    assert out.count("of 24 template checks pass") == 2
    assert out.count("| **tiny-test 0.0.1") == 2
    rows = pd.read_csv(tsv, sep="\t")
    assert len(rows) == 2 * len(rows[rows.model == rows.model.iloc[0]])
    assert set(rows.source) == {"synthetic", "atlas", "template"}


def test_missing_data_is_one_line(tmp_path, capsys):
    config = write_protocol_data(tmp_path / "data", templates=False)
    model = str(make_tiny_model(tmp_path / "model"))
    assert protocol.main([model, "--config", str(config), "--cache", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Template-Month0-T2w.nii.gz" in err
