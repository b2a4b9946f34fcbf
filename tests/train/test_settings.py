"""Train settings: defaults, a --config file, then flags; clear errors."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from bids_infantseg.train.settings import (
    PAPER_LR_GRID,
    SITE,
    SYNTHETIC,
    Settings,
    SettingsError,
    build,
    from_args,
    read_config,
)

REPO = Path(__file__).resolve().parents[2]


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
    from bids_infantseg.cli.main import parse_args

    config = tmp_path / "c.json"
    config.write_text(json.dumps({"batch_size": 2, "epochs_all": 3}))
    base = ["bids", "out", "train", "--labels", "L", "--config", str(config)]
    for extra, batch in (([], 2), (["--batch-size", "8"], 8)):
        settings = from_args(parse_args(base + extra), SITE)
        assert settings.batch_size == batch and settings.epochs_all == 3


def test_every_setting_is_a_flag_and_a_config_key_of_one_name(tmp_path):
    """The one configuration: each field of Settings is a train flag (its name with '-')
    and a key of the file, site and synthetic alike; the old starter names are gone."""
    from bids_infantseg.cli.main import build_parser, parse_args

    names = {f.name for f in fields(Settings)}
    assert {"epochs_all", "shared_views", "num_filters", "grid_size"} <= names
    assert not {"epochs", "separate_views", "filters", "grid", "init"} & names
    help_text = build_parser().format_help()
    for spec in fields(Settings):
        flag = (spec.metadata["flags"] or (f"--{spec.name.replace('_', '-')}",))[0]
        assert flag in help_text, flag
    config = tmp_path / "synthetic.json"
    config.write_text(json.dumps({"sources": [{"name": "procedural", "kind": "procedural"}],
                                  "train": {"epochs_all": 4, "shared_views": True,
                                            "lr_decay": 0.5, "num_filters": 4,
                                            "pretrained": "none"}}))
    args = parse_args([str(config), "out", "train", "--lr-decay", "0.25", "--no-shared-views"])
    settings = from_args(args, SYNTHETIC)
    assert (settings.epochs_all, settings.lr_decay, settings.shared_views,
            settings.num_filters) == (4, 0.25, False, 4)


def test_a_setting_of_the_other_kind_of_training_is_an_error():
    with pytest.raises(SettingsError, match="steps_per_epoch applies only to synthetic"):
        build({}, {"labels": "L", "steps_per_epoch": 3}, kind=SITE)
    with pytest.raises(SettingsError, match="max_slices_per_epoch applies only to site"):
        build({}, {"max_slices_per_epoch": 3}, kind=SYNTHETIC)


def test_the_bundled_configs_hold_their_recipe_under_the_one_set_of_names():
    from bids_infantseg.cli.main import parse_args

    drawem9 = REPO / "configs" / "drawem9-synth-starter.json"
    settings = from_args(parse_args([str(drawem9), "out", "train", "--lr", "0.5"]), SYNTHETIC)
    assert (settings.lr, settings.lr_decay, settings.epochs_all, settings.steps_per_epoch,
            settings.batch_size, settings.skull_strip, settings.pretrained, settings.model_version,
            settings.shared_views, settings.minutes, settings.eval_minutes) == \
        (0.5, 0.94, 30, 60, 8, 0.5, "drawem9-synth-starter", "0.5.0", True, 100, 8)
    aseg = from_args(parse_args([str(drawem9.with_name("aseg-synth-starter.json")), "out",
                                 "train"]), SYNTHETIC)
    assert (aseg.label_set, aseg.epochs_classifier, aseg.epochs_all, aseg.class_weight_cap) == \
        ("aseg", 3, 15, 10)


def test_the_scorer_is_named_by_module_and_function():
    from bids_infantseg.train.settings import load_scorer

    assert load_scorer("bids_infantseg.core.metrics:scores").__name__ == "scores"
    assert load_scorer(None) is None
    for name in ("nowhere:score", "bids_infantseg.core.metrics:nothing",
                 "bids_infantseg.core.metrics"):
        with pytest.raises(SettingsError, match=f"scorer '{name}': cannot be imported"):
            load_scorer(name)


def test_the_label_set_option_is_the_synthetic_models_labels(tmp_path):
    from bids_infantseg.cli.main import parse_args

    config = tmp_path / "synthetic.json"
    config.write_text(json.dumps({"sources": [{"name": "procedural", "kind": "procedural"}]}))
    args = parse_args([str(config), "out", "train", "--label-set", "aseg"])
    assert from_args(args, SYNTHETIC).label_set == "aseg"
    with pytest.raises(SettingsError, match="label_set applies only to synthetic"):
        from_args(parse_args(["bids", "out", "train", "--labels", "L", "--label-set", "aseg"]),
                  SITE)


def test_the_protocol_scores_synthetic_training_only(tmp_path, capsys):
    from bids_infantseg.cli.main import main
    from bids_infantseg.train.settings import PROTOCOL, load_scorer

    assert load_scorer(PROTOCOL) is None  # built by the synthetic trainer, which has the config
    bids = tmp_path / "bids"
    bids.mkdir()
    assert main([str(bids), str(tmp_path / "out"), "train", "--labels", str(tmp_path),
                 "--scorer", "protocol"]) == 2
    assert "scorer protocol: it scores synthetic training" in capsys.readouterr().err
