"""Train settings: defaults, a --config file, then flags; clear errors."""

from __future__ import annotations

import json

import pytest

from bids_infantseg.train.settings import PAPER_LR_GRID, SettingsError, build, read_config


def test_config_overrides_defaults_and_flags_override_the_config(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"epochs-all": 7, "lr": 0.01, "views": "axial",
                                  "lr_grid": "paper", "augment": False, "labels": "L"}))
    settings = build(read_config(config), {"lr": 0.002})
    assert settings.epochs_all == 7 and settings.lr == 0.002 and settings.views == ("axial",)
    assert settings.lr_grid == PAPER_LR_GRID and settings.augment is False
    assert settings.epochs_classifier == 15  # default kept


@pytest.mark.parametrize("content,match", [
    ({"epochs": 3}, "unknown setting 'epochs'"),
    ({"cv": "fold"}, "loso, kfold:K"),
    ({"views": "top"}, "views"),
    ({"epochs_all": 2.5}, "expected int"),
    ({"lr_grid": "fast"}, "lr_grid"),
])
def test_bad_config_is_a_clear_error(tmp_path, content, match):
    config = tmp_path / "c.json"
    config.write_text(json.dumps(content))
    with pytest.raises(SettingsError, match=match):
        build(read_config(config), {"labels": "L"})


def test_checks():
    with pytest.raises(SettingsError, match="needs --labels"):
        build({}, {})
    with pytest.raises(SettingsError, match="only with --pretrained none"):
        build({}, {"labels": "L", "num_filters": 8})
    with pytest.raises(SettingsError, match="nothing to train"):
        build({}, {"labels": "L", "pretrained": "none", "epochs_all": 0})
    with pytest.raises(SettingsError, match="needs cross-validation"):
        build({}, {"labels": "L", "cv": "none", "lr_grid": "paper"})
    assert build({}, {"labels": "L", "cv": "kfold:5"}).cv_scheme == ("kfold", 5)
