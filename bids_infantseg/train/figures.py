"""Cross-validation figures (PNG): Dice per label, learning curves, confusion, rate grid."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from bids_infantseg.io.derivatives import atomic_write_bytes  # noqa: E402


def _save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def dice_per_label(metrics: pd.DataFrame, path: Path, title: str) -> Path:
    """Box plot of per-scan Dice and accuracy for each label (one box per label)."""
    names = list(dict.fromkeys(metrics["name"]))
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 0.9 * len(names) + 2), 4.2), sharey=True)
    for ax, metric in zip(axes, ("dice", "accuracy"), strict=True):
        data = [metrics.loc[metrics["name"] == n, metric].dropna().to_numpy() for n in names]
        ax.boxplot([d if d.size else np.array([np.nan]) for d in data], showmeans=True)
        for i, d in enumerate(data, start=1):
            ax.plot(np.full(d.size, i) + np.linspace(-0.12, 0.12, d.size), d, ".",
                    color="tab:blue", alpha=0.5, markersize=4)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=60, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(metric.capitalize() + " (held-out scans, 3D)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def learning_curves(curves: pd.DataFrame, path: Path, title: str) -> Path:
    """Mean held-out accuracy per label against epoch (mean over folds), one panel per unit."""
    units = list(dict.fromkeys(curves["unit"]))
    fig, axes = plt.subplots(1, len(units), figsize=(5.5 * len(units), 4.2), squeeze=False)
    for ax, unit in zip(axes[0], units, strict=True):
        part = curves[curves["unit"] == unit]
        mean = part.groupby(["name", "epoch"], sort=False)["accuracy"].mean().reset_index()
        for name, rows in mean.groupby("name", sort=False):
            ax.plot(rows["epoch"], rows["accuracy"], marker=".", label=name)
        stages = part.drop_duplicates("epoch").sort_values("epoch")
        switch = stages.loc[stages["stage"] == "all", "epoch"]
        if len(switch) and (stages["stage"] == "classifier").any():
            ax.axvline(switch.min() - 0.5, color="grey", linestyle="--", linewidth=1)
            ax.text(switch.min() - 0.4, 0.02, "stage II", color="grey", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("mean accuracy |A∩B|/|B| on held-out scans")
        ax.set_ylim(0, 1)
        ax.set_title(unit, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def confusion(matrix: np.ndarray, names: list[str], path: Path, title: str) -> Path:
    """Row-normalised confusion (rows: manual label, columns: predicted)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        rows = matrix / matrix.sum(axis=1, keepdims=True)
    size = max(4.5, 0.45 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(np.nan_to_num(rows), vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("manual")
    if len(names) <= 20:
        for i in range(len(names)):
            for j in range(len(names)):
                if rows[i, j] >= 0.01:
                    ax.text(j, i, f"{rows[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if rows[i, j] < 0.6 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def lr_grid(table: pd.DataFrame, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.semilogx(table["lr"], table["brain_dice_mean"], marker="o")
    best = table.loc[table["chosen"]]
    ax.semilogx(best["lr"], best["brain_dice_mean"], "r*", markersize=14, label="chosen")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("mean Dice over brain labels (CV)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=10)
    return _save(fig, path)
