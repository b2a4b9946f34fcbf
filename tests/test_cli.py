"""``--label-set``: the bundled model of a label set, a one-line error where none is bundled,
and ``--model`` winning over it."""

from __future__ import annotations

import pytest

from bids_infantseg import cli
from bids_infantseg.model import card
from bids_infantseg.model.card import ModelError


def test_label_set_picks_its_bundled_model_and_model_overrides_it(tmp_path, monkeypatch):
    assert cli.model_for_label_set("default", None) == "default"
    assert cli.model_for_label_set("default", "drawem9") == "drawem9-synth-starter"
    assert cli.model_for_label_set("/my/model", "aseg") == "/my/model"
    (tmp_path / "aseg-synth-starter").mkdir()
    (tmp_path / "aseg-synth-starter" / "card.json").write_text("{}")
    monkeypatch.setattr(card, "bundled_models_dir", lambda: tmp_path)
    assert cli.model_for_label_set("default", "aseg") == "aseg-synth-starter"


def test_label_set_without_a_bundled_model_is_one_line_and_exit_2(tmp_path, monkeypatch,
                                                                   capsys):
    monkeypatch.setattr(card, "bundled_models_dir", lambda: tmp_path)
    with pytest.raises(ModelError, match="no bundled model aseg-synth-starter"):
        cli.model_for_label_set("default", "aseg")
    assert cli.main([str(tmp_path), str(tmp_path / "out"), "participant",
                     "--label-set", "aseg"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["bids_infantseg: error: --label-set aseg: no bundled model "
                   "aseg-synth-starter (bundled: none); train one (docs/training.md) and give "
                   "its folder with --model"]
