"""A damaged ``model.safetensors`` (truncated, a header byte changed) at every level that
loads a model: one line naming the file and what is wrong, exit 2, no traceback. The group
level reads only the participant level's tables and never loads a model."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bids_infantseg.cli.main import main
from bids_infantseg.model.card import WEIGHTS_FILE
from tests.bids_factory import write_description
from tests.model.test_card import _change_header_byte, _truncate
from tests.model_factory import make_tiny_model
from tests.train.factory import labelled_dataset

DAMAGES = {"truncated": (_truncate, "truncated"),
           "header byte changed": (_change_header_byte, "damaged header")}


@pytest.mark.parametrize("damage", DAMAGES)
def test_participant_level_with_a_damaged_model_exits_2_with_one_line(tmp_path, damage):
    change, reason = DAMAGES[damage]
    model = make_tiny_model(tmp_path / "model")
    change(model / WEIGHTS_FILE)
    bids = tmp_path / "bids"
    write_description(bids)
    run = subprocess.run([sys.executable, "-m", "bids_infantseg", str(bids), str(tmp_path / "out"),
                          "participant", "--model", str(model)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"bids_infantseg: error: {model / WEIGHTS_FILE}: "
                               f"not a usable weights file: {reason}")


@pytest.mark.parametrize("damage", DAMAGES)
def test_train_level_with_a_damaged_pretrained_model_exits_2_with_one_line(tmp_path, capsys,
                                                                           damage):
    change, reason = DAMAGES[damage]
    root, labels = labelled_dataset(tmp_path / "bids", ("01", "02"))
    model = make_tiny_model(tmp_path / "model")
    change(model / WEIGHTS_FILE)
    assert main([str(root), str(tmp_path / "out"), "train", "--labels", str(labels),
                 "--pretrained", str(model)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()  # the log's lines (data found), then the error
    assert "Traceback" not in err and sum("error" in line.lower() for line in lines) == 1, err
    assert lines[-1].startswith(f"bids_infantseg: error: {model / WEIGHTS_FILE}: "
                                f"not a usable weights file: {reason}")
