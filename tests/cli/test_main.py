"""The command line: options per analysis level, the one error base turned into one line
and exit status 2, and ``--label-set`` (the bundled model of a label set, ``--model``
winning over it)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import bids_infantseg
from bids_infantseg.cli import main as cli
from bids_infantseg.io.images import BadImageError
from bids_infantseg.model import card
from bids_infantseg.model.card import ModelError
from bids_infantseg.model.labelmap import LabelMapError
from bids_infantseg.utils.errors import InfantsegError

PACKAGE = Path(bids_infantseg.__file__).parent


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


def _error_classes() -> list[tuple[str, str]]:
    """(module, class) of every class in the package named ...Error (read from the source,
    so that a new module's errors are found without a list to keep)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found += [(module, node.name) for node in ast.walk(ast.parse(path.read_text()))
                  if isinstance(node, ast.ClassDef) and node.name.endswith("Error")]
    return found


def test_every_error_class_derives_from_the_one_base():
    classes = _error_classes()
    assert len(classes) >= 23
    outside = [f"{module}.{name}" for module, name in classes
               if not issubclass(getattr(importlib.import_module(module), name), InfantsegError)]
    assert outside == []


@pytest.mark.parametrize("level,run,error", [
    ("group", "bids_infantseg.cli.group.run_group", LabelMapError("x.tsv: no index column")),
    ("participant", "bids_infantseg.cli.participant.run_participant",
     BadImageError("sub-01_T2w.nii.gz: not a NIfTI file")),
    ("train", "bids_infantseg.train.site.run_train", ModelError("card.json: no weights")),
])
def test_any_package_error_at_any_level_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys,
                                                               level, run, error):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(run, fail)
    assert cli.main([str(tmp_path), str(tmp_path / "out"), level]) == cli.EXIT_USAGE
    assert capsys.readouterr().err.splitlines() == [f"bids_infantseg: error: {error}"]


@pytest.mark.parametrize("level,given,message", [
    ("participant", ["--epochs-all", "3"],
     "argument --epochs-all: an option of the train level, not of participant"),
    ("participant", ["--labels", "L"],
     "argument --labels: an option of the train level, not of participant"),
    ("train", ["--labels", "L", "--write-probseg"],
     "argument --write-probseg: an option of the participant level, not of train"),
    ("group", ["--write-probseg"],
     "argument --write-probseg: an option of the participant level, not of group"),
    ("group", ["-w", "W", "--participant_label", "01"],
     "argument --participant-label/--participant_label: an option of the participant and "
     "train levels, not of group; argument -w/--work-dir/--work_dir: an option of the "
     "participant and train levels, not of group"),
])
def test_an_option_of_another_level_is_a_usage_error_naming_it(tmp_path, capsys, level, given,
                                                               message):
    with pytest.raises(SystemExit) as exit_:
        cli.main([str(tmp_path), str(tmp_path / "out"), level, *given])
    assert exit_.value.code == cli.EXIT_USAGE
    usage, error = capsys.readouterr().err.splitlines()
    assert usage == "usage: bids_infantseg BIDS_DIR OUTPUT_DIR {participant,group,train} [options]"
    assert error == f"bids_infantseg: error: {message}"


def test_each_level_takes_its_own_options():
    train = cli.parse_args(["b", "o", "train", "--labels", "L", "--participant-label", "01",
                            "-w", "W", "--nprocs", "2", "--batch-size", "4", "-v"])
    assert (train.participant_label, str(train.work_dir), train.nprocs) == (["01"], "W", 2)
    participant = cli.parse_args(["b", "o", "participant", "--write-probseg", "--plugin",
                                  "SLURM", "--participant-label", "01", "--no-refine-em"])
    assert participant.write_probseg and participant.refine_em is False
    assert cli.parse_args(["b", "o", "group", "-vv"]).verbose == 2


def test_every_option_but_the_common_ones_names_its_levels_in_help():
    parser = cli.build_parser()
    common = {"help", "version", "verbose", "bids_dir", "output_dir", "analysis_level"}
    options = {action.dest for action in parser._actions}
    assert options - common == set(parser.levels)
    assert all(set(levels) <= set(cli.LEVELS) for _, levels in parser.levels.values())
    text = parser.format_help()
    for title in ("selecting scans (participant and train levels)", "segmentation "
                  "(participant level)", "training (train level)"):
        assert f"\n{title}:" in text
