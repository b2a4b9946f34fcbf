"""Two training processes (torchrun, gloo on CPU) finish the same epochs as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.train.factory import labelled_dataset


def train(root, labels, out, processes: int, batch: int):
    config = out.parent / "c.json"
    config.write_text(json.dumps({"num_filters": 4, "voxel_size_mm": 6.0, "grid_size": 32}))
    args = [str(root), str(out), "train", "--labels", str(labels), "--pretrained", "none",
            "--cv", "none", "--views", "axial", "--epochs-all", "2",
            "--max-slices-per-epoch", "16", "--batch-size", str(batch), "--nprocs", "1",
            "--omp-nthreads", "1", "--config", str(config)]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", str(processes)] if processes > 1 else [sys.executable]
    done = subprocess.run([*launcher, "-m", "bids_infantseg", *args], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (unit,) = out.glob(".work/train/*/final/lr-*/axial/done.json")
    return json.loads(unit.read_text()), load_file(next(out.glob("models/*/model.safetensors")))


@pytest.mark.slow
def test_two_process_ddp_completes_the_same_epochs_as_one_process(tmp_path):
    root, labels = labelled_dataset(tmp_path / "bids", ("01", "02", "03"))
    one, weights_one = train(root, labels, tmp_path / "one", 1, batch=8)
    two, weights_two = train(root, labels, tmp_path / "two", 2, batch=4)
    assert two["processes"] == 2 and two["rank_spread"] == 0.0  # ranks stay identical
    assert [(h["epoch"], h["slices"]) for h in one["history"]] == \
        [(h["epoch"], h["slices"]) for h in two["history"]] == [(1, 16), (2, 16)]
    for a, b in zip(one["history"], two["history"], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=0.05)  # same global batches
    assert weights_one.keys() == weights_two.keys()
    assert all(torch.isfinite(t).all() for t in weights_two.values())
