"""benchmarks/accuracy.py: runs the app on a labelled dataset, tables match the files, overlays
show manual outlines on top and predicted ones below."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb

from bids_infantseg.model.labels import DRAWEM9
from tests.bids_factory import write_description, write_json, write_tsv
from tests.conftest import t2w_path, write_head

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


accuracy = _load("accuracy")


@pytest.fixture
def labelled(tmp_path) -> tuple[Path, Path]:
    """Two heads with manual labels in a label set of their own (1 = shell, 2 = core)."""
    root, manual = tmp_path / "bids", tmp_path / "bids" / "derivatives" / "manual"
    write_description(root)
    write_tsv(root / "participants.tsv", [{"participant_id": "sub-01", "age_months": "1"},
                                          {"participant_id": "sub-02", "age_months": "6"}])
    for seed, subject in enumerate(("01", "02"), start=1):
        path = write_head(t2w_path(root, subject), seed=seed)
        write_json(path.with_name(path.name.replace(".nii.gz", ".json")), {"EchoTime": 0.15})
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)
        labels = np.select([data > 800, data > 450, data > 150], [2, 2, 1], 0).astype(np.int16)
        out = manual / f"sub-{subject}" / "anat" / f"sub-{subject}_desc-manual_dseg.nii.gz"
        out.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(labels, image.affine), out)
    write_json(manual / "dataset_description.json",
               {"Name": "manual", "BIDSVersion": "1.10.0", "DatasetType": "derivative"})
    return root, manual


def test_runs_the_app_and_tables_match_the_files(labelled, tmp_path, tiny_model_dir, capsys):
    root, manual = labelled
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"1": 2, "2": 3}))  # shell -> cortex, core -> WM
    results = tmp_path / "results"
    assert accuracy.main([str(root), str(manual), "--results", str(results), "--model",
                          str(tiny_model_dir), "--map", str(mapping), "--",
                          "--nprocs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "2 scans" in printed and "mean brain Dice over scans" in printed
    timing = json.loads((results / "timing.json").read_text())
    assert timing["scans"] == 2 and timing["seconds_per_scan"] > 0
    per_scan = pd.read_csv(results / "per_scan.tsv", sep="\t")
    # recompute one scan's WM Dice from the files themselves
    pred = np.asanyarray(nib.load(next((results / "bids_infantseg").rglob(
        "sub-02_*desc-drawem9_dseg.nii.gz"))).dataobj)
    ref = np.asanyarray(nib.load(manual / "sub-02/anat/sub-02_desc-manual_dseg.nii.gz").dataobj)
    wm_pred, wm_ref = pred == 3, ref == 2
    row = per_scan[(per_scan["scan"] == "sub-02") & (per_scan["index"] == 3)].iloc[0]
    assert row["dice"] == pytest.approx(2 * (wm_pred & wm_ref).sum()
                                        / (wm_pred.sum() + wm_ref.sum()))
    summary = pd.read_csv(results / "summary.tsv", sep="\t")
    assert summary.loc[summary["index"] == 3, "scans"].item() == 2
    assert sorted(p.name for p in (results / "overlays").iterdir()) == ["sub-01.png",
                                                                        "sub-02.png"]

    # --reuse compares what is there without running the app again
    (results / "timing.json").unlink()
    assert accuracy.main([str(root), str(manual), "--results", str(results), "--reuse",
                          "--map", str(mapping)]) == 0
    assert not (results / "timing.json").exists()
    reused = pd.read_csv(results / "per_scan.tsv", sep="\t")
    pd.testing.assert_frame_equal(reused, per_scan)


def test_reuse_without_outputs_is_a_clear_error(labelled, tmp_path, capsys):
    root, manual = labelled
    (tmp_path / "out").mkdir()
    assert accuracy.main([str(root), str(manual), "--results", str(tmp_path / "r"),
                          "--output", str(tmp_path / "out"), "--reuse"]) == 2
    assert "desc-<labels>_dseg.tsv" in capsys.readouterr().err


def _has_colour(pixels: np.ndarray, colour: str) -> bool:
    return bool((np.abs(pixels[..., :3] - np.array(to_rgb(colour))) < 0.08).all(axis=-1).any())


def test_overlay_shows_manual_on_top_and_prediction_below(tmp_path):
    path = write_head(tmp_path / "t2w.nii.gz", seed=1)
    shape = nib.load(path).shape
    manual = np.zeros(shape, np.int64)
    predicted = np.zeros(shape, np.int64)
    centre = tuple(slice(n // 2 - 6, n // 2 + 6) for n in shape)
    manual[centre] = 5  # ventricles
    predicted[centre] = 7  # deep grey matter
    fig = accuracy.overlay_figure(nib.load(path), manual, predicted, DRAWEM9, "test")
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba(), dtype=float) / 255.0
    plt.close(fig)
    top, bottom = pixels[: len(pixels) // 2], pixels[len(pixels) // 2:]
    ventricles, deep_gm = DRAWEM9.by_index(5).color, DRAWEM9.by_index(7).color
    assert _has_colour(top, ventricles) and not _has_colour(top, deep_gm)
    assert _has_colour(bottom, deep_gm) and not _has_colour(bottom, ventricles)


def test_dice_table_rows_are_the_manual_labels_and_extras_are_named():
    from bids_infantseg.core.metrics import overlap_table

    reference = np.zeros((4, 4, 4), int)
    reference[:2] = 3
    predicted = reference.copy()
    predicted[0, 0] = 4  # non-brain tissue where the manual map says WM
    predicted[3, 3] = 9  # a label no manual map holds
    table = overlap_table(predicted, reference, DRAWEM9)
    table.insert(0, "scan", "sub-01")
    text = accuracy.dice_markdown(table, DRAWEM9)
    rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")]
    assert rows == ["label", "White matter", "brain mean (labels in the manual map)"]
    wm = 2 * (32 - 4) / (32 + 28)
    assert f"| White matter | {wm:.3f} | {wm:.3f} |" in text
    # 4 + 4 voxels of 36 labelled other than 0
    assert "Background 11.1%, Hippocampus and amygdala 11.1%" in text
