"""The train level end to end on a tiny model and tiny labelled phantoms."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from bids_infantseg.cli.main import main, parse_args
from bids_infantseg.core.inference import predict
from bids_infantseg.model.card import load_model
from bids_infantseg.train.site import run_train
from tests.model_factory import make_tiny_model
from tests.train.factory import bobs_dataset, labelled_dataset

TINY_SCRATCH = {"num_filters": 4, "voxel_size_mm": 6.0, "grid_size": 32}


@pytest.fixture
def dataset(tmp_path):
    return labelled_dataset(tmp_path / "bids", ("01", "02", "03"))


def argv(root, labels, out, *extra):
    return [str(root), str(out), "train", "--labels", str(labels), "--nprocs", "1",
            "--batch-size", "4", "--max-slices-per-epoch", "12", *extra]


def test_fine_tune_with_leave_one_subject_out_writes_a_usable_model(tmp_path, dataset):
    root, labels = dataset
    pretrained = make_tiny_model(tmp_path / "tiny")
    out = tmp_path / "out"
    code = main(argv(root, labels, out, "--pretrained", str(pretrained), "--views",
                     "axial,coronal", "--epochs-classifier", "1", "--epochs-all", "1"))
    assert code == 0
    folder = out / "models" / "manual-from-tiny-test"
    model = load_model(folder)  # what --model accepts
    assert list(model.card.views) == ["axial", "coronal"]
    assert [lab.name for lab in model.card.labels.labels] == ["Outside", "Shell", "Core", "Blob"]
    assert model.card.training["pretrained"]["classifier"] == "replaced"
    assert model.card.metrics["cross_validation"]["folds"] == 3
    probs = predict(model, np.zeros((32, 32, 32), np.float32))
    assert probs.shape == (4, 32, 32, 32)

    cv = folder / "cv"
    folds = pd.read_csv(cv / "folds.tsv", sep="\t", dtype=str)
    assert folds["held_out_subjects"].tolist() == ["01", "02", "03"]
    metrics = pd.read_csv(cv / "metrics.tsv", sep="\t")
    assert len(metrics) == 3 * 4 and set(metrics["scan"]) == {"sub-01", "sub-02", "sub-03"}
    assert metrics["dice"].between(0, 1).all()
    curves = pd.read_csv(cv / "curves.tsv", sep="\t")
    assert set(curves["epoch"]) == {1, 2} and set(curves["stage"]) == {"classifier", "all"}
    assert set(curves["unit"]) == {"axial", "coronal"}
    for name in ("summary.tsv", "confusion.tsv", "confusion_total.tsv", "dice.png",
                 "curves.png", "confusion.png"):
        assert (cv / name).is_file(), name
    total = pd.read_csv(cv / "confusion_total.tsv", sep="\t", index_col=0)
    assert total.to_numpy().sum() == metrics["reference_voxels"].sum()
    assert json.loads((out / "dataset_description.json").read_text())["DatasetType"] == \
        "derivative"


def test_baby_open_brains_trains_in_one_command(tmp_path):
    """The documented command on a mock of ds005450: raw dataset as scans and labels, asegs
    mapped to DrawEM9, cross-validated (evaluation reads the mapped asegs too)."""
    root = bobs_dataset(tmp_path / "ds005450")
    out = tmp_path / "out"
    code = main(argv(root, root, out, "--labels-map", "aseg-to-drawem9", "--pretrained",
                     str(make_tiny_model(tmp_path / "tiny")), "--views", "axial",
                     "--epochs-classifier", "1", "--epochs-all", "0"))
    assert code == 0
    model = load_model(out / "models" / "drawem9-from-tiny-test")
    assert model.card.labels.name == "drawem9"
    assert model.card.training["pretrained"]["classifier"] == "kept"
    assert model.card.training["data"]["labels_map"] == "aseg-to-drawem9"
    assert "mapped to drawem9 by aseg-to-drawem9" in model.card.description
    metrics = pd.read_csv(out / "models" / "drawem9-from-tiny-test" / "cv" / "metrics.tsv",
                          sep="\t")
    reference = metrics.groupby("index")["reference_voxels"].sum()
    assert reference[reference > 0].index.tolist() == [0, 1, 2, 3, 9]


def final_history(work) -> list[dict]:
    (done,) = work.glob("train/*/final/lr-*/*/done.json")
    return json.loads(done.read_text())["history"]


def test_training_from_scratch_lowers_the_loss(tmp_path, dataset):
    root, labels = dataset
    config = tmp_path / "c.json"
    config.write_text(json.dumps({**TINY_SCRATCH, "augment": False, "lr": 0.01}))
    code = main(argv(root, labels, tmp_path / "out", "--pretrained", "none", "--cv", "none",
                     "--views", "axial", "--epochs-all", "6", "--config", str(config)))
    assert code == 0
    losses = [h["loss"] for h in final_history(tmp_path / "out" / ".work")]
    assert len(losses) == 6 and losses[-1] < losses[0]
    card = load_model(tmp_path / "out" / "models" / "manual-scratch").card
    assert card.architecture.num_filters == 4 and card.training["pretrained"] is None


class Killed(Exception):
    pass


def run(args_list, hook=None):
    return run_train(parse_args(args_list), runtime_hook=hook)


def test_resume_after_a_kill_gives_the_weights_of_an_uninterrupted_run(tmp_path, dataset):
    root, labels = dataset
    pretrained = make_tiny_model(tmp_path / "tiny")

    def args(out):
        return argv(root, labels, out, "--pretrained", str(pretrained), "--views", "axial",
                    "--cv", "none", "--epochs-classifier", "1", "--epochs-all", "2")

    assert run(args(tmp_path / "straight")) == 0

    def kill_after_second_epoch(runtime):
        def after(unit, epoch):
            if epoch == 2:
                raise Killed
        runtime.after_epoch = after

    with pytest.raises(Killed):
        run(args(tmp_path / "resumed"), kill_after_second_epoch)
    assert not (tmp_path / "resumed" / "models").exists()
    assert run(args(tmp_path / "resumed")) == 0
    a = load_file(tmp_path / "straight" / "models" / "manual-from-tiny-test" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "models" / "manual-from-tiny-test" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["epoch"] for h in final_history(tmp_path / "resumed" / ".work")] == [1, 2, 3]


@pytest.mark.parametrize("problem,message", [
    ("no_labels_option", "needs --labels"),
    ("no_dseg", "no sub-*_dseg"),
    ("unknown_value", "no usable training volume"),
    ("one_subject", "cross-validation needs at least 2 subjects"),
    ("bad_config", "unknown setting"),
])
def test_bad_label_inputs_exit_2_with_one_clear_line(tmp_path, dataset, capsys, problem,
                                                     message):
    root, labels = dataset
    extra = []
    if problem == "no_labels_option":
        args = [str(root), str(tmp_path / "out"), "train"]
    else:
        if problem == "no_dseg":
            for path in labels.rglob("*_dseg.nii.gz"):
                path.unlink()
        if problem == "unknown_value":
            (labels / "desc-manual_dseg.tsv").write_text("index\tname\n0\tOutside\n1\tShell\n")
        if problem == "one_subject":
            extra = ["--participant-label", "01"]
        if problem == "bad_config":
            (tmp_path / "c.json").write_text('{"epochs": 1}')
            extra = ["--config", str(tmp_path / "c.json")]
        args = argv(root, labels, tmp_path / "out", *extra)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_loader_processes_do_not_change_what_is_learnt(tmp_path, dataset):
    root, labels = dataset
    pretrained = make_tiny_model(tmp_path / "tiny")
    weights = []
    for nprocs in ("1", "2"):
        out = tmp_path / f"out{nprocs}"
        args = argv(root, labels, out, "--pretrained", str(pretrained), "--views", "axial",
                    "--cv", "none", "--epochs-classifier", "1", "--epochs-all", "1")
        args[args.index("--nprocs") + 1] = nprocs
        assert main(args) == 0
        weights.append(load_file(out / "models" / "manual-from-tiny-test" / "model.safetensors"))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_learning_rate_grid_picks_the_best_rate_by_cross_validated_dice(tmp_path):
    root, labels = labelled_dataset(tmp_path / "bids", ("01", "02"))
    pretrained = make_tiny_model(tmp_path / "tiny")
    out = tmp_path / "out"
    assert main(argv(root, labels, out, "--pretrained", str(pretrained), "--views", "axial",
                     "--epochs-classifier", "1", "--epochs-all", "0", "--lr-grid",
                     "1e-4,3e-2", "--no-final")) == 0
    cv = out / "models" / "manual-from-tiny-test" / "cv"
    grid = pd.read_csv(cv / "lr_grid.tsv", sep="\t")
    assert grid["lr"].tolist() == [1e-4, 3e-2] and grid["chosen"].sum() == 1
    best = grid.loc[grid["brain_dice_mean"].idxmax(), "lr"]
    assert grid.loc[grid["chosen"], "lr"].item() == best
    assert set(pd.read_csv(cv / "metrics.tsv", sep="\t")["lr"]) == {1e-4, 3e-2}
    assert (cv / "lr_grid.png").is_file()
    assert not (out / "models" / "manual-from-tiny-test" / "card.json").exists()  # --no-final
