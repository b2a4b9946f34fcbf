"""What the train level writes: cross-validation tables and figures, and the model card.

``OUTPUT_DIR/models/<name>/`` is a model folder (``card.json`` + ``model.safetensors``) that
``--model`` accepts; its ``cv/`` holds:

- ``folds.tsv``: each fold's held-out subjects and scans;
- ``metrics.tsv``: per learning rate, fold, held-out scan and label: Dice, accuracy
  ``|A∩B|/|B|``, voxels predicted and in the manual map (3D, on the scan's own grid);
- ``summary.tsv``: per label, mean and SD over held-out scans (the chosen rate);
- ``confusion.tsv``: per fold, voxels of each (manual, predicted) label pair (non-zero
  pairs), and ``confusion_total.tsv``: the matrix summed over folds (rows manual);
- ``curves.tsv``: per fold, network and epoch: training loss and held-out accuracy and Dice
  per label on the model grid (the learning curves);
- ``lr_grid.tsv`` with several rates: mean Dice per rate and the one chosen;
- ``dice.png``, ``curves.png``, ``confusion.png`` (and ``lr_grid.png``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bids_infantseg.core.metrics import scores
from bids_infantseg.io.derivatives import atomic_write_tsv
from bids_infantseg.model.labels import LabelSet
from bids_infantseg.train import figures
from bids_infantseg.train.cache import Volume
from bids_infantseg.train.crossval import Fold, FoldResult
from bids_infantseg.train.engine import nanmean
from bids_infantseg.train.pairs import Skipped


def metrics_table(results: Sequence[FoldResult], volumes: Sequence[Volume],
                  labels: LabelSet) -> pd.DataFrame:
    by_key = {v.key: v for v in volumes}
    frames = []
    for result in results:
        per_scan = scores(result.confusion)
        for s, key in enumerate(result.test):
            volume = by_key.get(key)
            counts = result.confusion[s]
            frames.append(pd.DataFrame({
                "lr": result.lr, "fold": result.fold, "scan": key,
                "subject": volume.subject if volume else None,
                "session": volume.session if volume else None,
                "age_weeks": None if volume is None or volume.age_weeks is None
                else round(volume.age_weeks, 2),
                "index": labels.indices.astype(int),
                "name": [lab.name for lab in labels.labels],
                "dice": per_scan["dice"][s], "accuracy": per_scan["accuracy"][s],
                "predicted_voxels": counts.sum(axis=0), "reference_voxels": counts.sum(axis=1),
            }))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def summary_table(metrics: pd.DataFrame) -> pd.DataFrame:
    grouped = metrics.groupby(["index", "name"], sort=True)
    return grouped.agg(scans=("dice", "count"), dice_mean=("dice", "mean"),
                       dice_sd=("dice", "std"), accuracy_mean=("accuracy", "mean"),
                       accuracy_sd=("accuracy", "std")).reset_index()


def brain_mean(values: pd.Series, indices: pd.Series, labels: LabelSet) -> float:
    keep = ~indices.isin(labels.non_brain)
    return float(np.nanmean(values[keep])) if keep.any() else float("nan")


def lr_table(metrics: pd.DataFrame, labels: LabelSet) -> pd.DataFrame:
    """Per learning rate: mean over labels of the per-label mean over held-out scans."""
    rows = []
    for lr, part in metrics.groupby("lr", sort=True):
        summary = summary_table(part)
        rows.append({"lr": lr, "dice_mean": float(np.nanmean(summary["dice_mean"])),
                     "brain_dice_mean": brain_mean(summary["dice_mean"], summary["index"],
                                                   labels),
                     "accuracy_mean": float(np.nanmean(summary["accuracy_mean"]))})
    table = pd.DataFrame(rows)
    scores_ = table["brain_dice_mean"].fillna(table["dice_mean"]).fillna(-1.0)
    table["chosen"] = False
    table.loc[int(np.argmax(scores_.to_numpy())), "chosen"] = True
    return table


def curves_table(results: Sequence[FoldResult], labels: LabelSet) -> pd.DataFrame:
    rows = []
    names = [lab.name for lab in labels.labels]
    for result in results:
        for unit, history in result.curves.items():
            for record in history:
                held = record.get("held_out") or {}
                for c, name in enumerate(names):
                    rows.append({
                        "lr": result.lr, "fold": result.fold, "unit": unit,
                        "epoch": record["epoch"], "stage": record["stage"],
                        "loss": record["loss"], "index": int(labels.indices[c]), "name": name,
                        "accuracy": (held.get("accuracy") or [None] * len(names))[c],
                        "dice": (held.get("dice") or [None] * len(names))[c]})
    return pd.DataFrame(rows)


def confusion_tables(results: Sequence[FoldResult], labels: LabelSet
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    names = [lab.name for lab in labels.labels]
    indices = labels.indices.astype(int)
    rows = []
    total = np.zeros((len(names), len(names)), dtype=np.int64)
    for result in results:
        matrix = result.confusion.sum(axis=0)
        total += matrix
        for i, j in zip(*np.nonzero(matrix), strict=True):
            rows.append({"fold": result.fold, "reference_index": indices[i],
                         "reference": names[i], "predicted_index": indices[j],
                         "predicted": names[j], "voxels": int(matrix[i, j])})
    wide = pd.DataFrame(total, columns=names)
    wide.insert(0, "reference", names)
    return pd.DataFrame(rows), wide


def folds_table(folds: Sequence[Fold], volumes: Sequence[Volume]) -> pd.DataFrame:
    return pd.DataFrame([{
        "fold": f.number, "held_out_subjects": " ".join(f.test),
        "held_out_scans": " ".join(v.key for v in volumes if v.subject in f.test),
        "training_subjects": len(f.train),
        "training_scans": sum(v.subject in f.train for v in volumes)} for f in folds])


def write_cv(folder: Path, *, folds: Sequence[Fold], results: Sequence[FoldResult],
             volumes: Sequence[Volume], labels: LabelSet, best_lr: float, title: str) -> dict:
    """Write ``folder`` (``cv/``); returns the summary for the model card."""
    folder = Path(folder)
    metrics = metrics_table(results, volumes, labels)
    best = [r for r in results if r.lr == best_lr]
    chosen = metrics[metrics["lr"] == best_lr]
    summary = summary_table(chosen)
    long, wide = confusion_tables(best, labels)
    curves = curves_table(best, labels)
    atomic_write_tsv(folder / "folds.tsv", folds_table(folds, volumes))
    atomic_write_tsv(folder / "metrics.tsv", metrics)
    atomic_write_tsv(folder / "summary.tsv", summary.round(4))
    atomic_write_tsv(folder / "confusion.tsv", long)
    atomic_write_tsv(folder / "confusion_total.tsv", wide)
    names = [lab.name for lab in labels.labels]
    figures.dice_per_label(chosen, folder / "dice.png", title)
    figures.confusion(wide[names].to_numpy(), names, folder / "confusion.png",
                      f"{title}: confusion, rows normalised")
    if not curves.empty:
        atomic_write_tsv(folder / "curves.tsv", curves)
        if curves["accuracy"].notna().any():
            figures.learning_curves(curves, folder / "curves.png", title)
    grid = lr_table(metrics, labels)
    if len(grid) > 1:
        atomic_write_tsv(folder / "lr_grid.tsv", grid.round(5))
        figures.lr_grid(grid, folder / "lr_grid.png", title)
    abbreviations = {lab.index: lab.abbreviation for lab in labels.labels}

    def by_label(column: str) -> dict[str, float | None]:
        return {abbreviations[int(i)]: None if pd.isna(v) else round(float(v), 4)
                for i, v in zip(summary["index"], summary[column], strict=True)}

    return {
        "folds": len(folds),
        "held_out_scans": int(chosen["scan"].nunique()),
        "learning_rate": best_lr,
        "dice_mean": by_label("dice_mean"), "dice_sd": by_label("dice_sd"),
        "accuracy_mean": by_label("accuracy_mean"),
        "brain_dice_mean": round(brain_mean(summary["dice_mean"], summary["index"], labels), 4),
        "per_learning_rate": {f"{r.lr:g}": round(r.brain_dice_mean, 4)
                              for r in grid.itertuples()} if len(grid) > 1 else None,
        "metric_note": "Dice 2|A∩B|/(|A|+|B|) and accuracy |A∩B|/|B| per held-out scan in 3D "
                       "on its own grid, averaged over scans; brain mean excludes non-brain "
                       "labels" + ("; the learning rate was chosen on these folds, so the "
                                   "chosen rate's scores are optimistic" if len(grid) > 1
                                   else ""),
    }


def chosen_lr(results: Sequence[FoldResult], volumes: Sequence[Volume],
              labels: LabelSet) -> float:
    grid = lr_table(metrics_table(results, volumes, labels), labels)
    return float(grid.loc[grid["chosen"], "lr"].iloc[0])


def skipped_table(skipped: Sequence[Skipped]) -> pd.DataFrame:
    return pd.DataFrame([{"item": s.item, "reason": s.reason} for s in skipped],
                        columns=["item", "reason"])


def mean_final_loss(curves: dict[str, list[dict]]) -> float | None:
    losses = [h[-1]["loss"] for h in curves.values() if h]
    return round(float(nanmean(np.asarray(losses, dtype=float))), 5) if losses else None
