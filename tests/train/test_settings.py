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


def test_a_config_file_overrides_parser_defaults_but_not_typed_flags(tmp_path):
    from bids_infantseg.cli import _given_options, build_parser
    from bids_infantseg.train.site import settings_from_args

    config = tmp_path / "c.json"
    config.write_text(json.dumps({"batch_size": 2, "epochs_all": 3}))
    base = ["bids", "out", "train", "--labels", "L", "--config", str(config)]
    for extra, batch in (([], 2), (["--batch-size", "8"], 8)):
        argv = base + extra
        settings = settings_from_args(build_parser().parse_args(argv), _given_options(argv))
        assert settings.batch_size == batch and settings.epochs_all == 3
