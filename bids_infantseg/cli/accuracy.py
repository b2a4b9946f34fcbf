"""Check a model against manual labels: per-label Dice and accuracy of participant outputs.

    python -m bids_infantseg.cli.accuracy OUTPUT_DIR LABELS_DIR [--labels-desc D] [--map FILE]
                                      [--tsv FILE]

``OUTPUT_DIR`` is what ``bids_infantseg ... participant`` wrote; ``LABELS_DIR`` is a
BIDS-Derivatives folder of manual ``_dseg`` files on the same T2w grids (e.g. a site's
manual segmentations). Files are matched by their source entities (sub, ses, acq, rec,
run, ...). Manual labels in another label set are translated with ``--map``, a JSON object
``{"manual index": model index}``. Prints per-label mean Dice and accuracy over scans and
writes the per-scan table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bids_infantseg.core.metrics import overlap_table
from bids_infantseg.io.images import BadImageError, load_label_map
from bids_infantseg.io.naming import parse_entities, source_key
from bids_infantseg.model.labelmap import LabelMapping, shipped_mappings
from bids_infantseg.model.labels import LabelSet, read_dseg_tsv
from bids_infantseg.utils.errors import InfantsegError


class AccuracyError(InfantsegError, ValueError):
    """Inputs that cannot be compared; the message names the file."""


def dseg_files(folder: Path, desc: str | None) -> dict[str, Path]:
    """``_dseg`` images under ``folder`` (optionally one ``desc``) by their source entities."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("sub-*_dseg.nii*")):
        if desc is not None and parse_entities(path.name).get("desc") != desc:
            continue
        key = source_key(path.name)
        if key in found:
            raise AccuracyError(f"{path}: a second dseg for {key} ({found[key].name}); "
                                "choose one with --labels-desc")
        found[key] = path
    return found


def output_label_set(output_dir: Path) -> LabelSet:
    tables = sorted(output_dir.glob("desc-*_dseg.tsv"))
    if len(tables) != 1:
        raise AccuracyError(f"{output_dir}: expected one desc-<labels>_dseg.tsv, "
                            f"found {len(tables)}")
    return read_dseg_tsv(tables[0])


def read_mapping(path: Path) -> dict[int, int]:
    """A ``--map`` JSON file: ``{"manual index": model index}``."""
    return {int(k): int(v) for k, v in json.loads(Path(path).read_text()).items()}


def apply_mapping(labels: np.ndarray, mapping: dict[int, int] | None) -> np.ndarray:
    """Manual indices translated to the model's; indices the mapping lacks stay as they are."""
    if not mapping:
        return labels
    lookup = np.arange(max(int(labels.max()), *mapping) + 1)
    for src, dst in mapping.items():
        lookup[src] = dst
    return lookup[labels]


def load_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An integer label map and its affine (AccuracyError when it is not one)."""
    try:
        return load_label_map(path)
    except BadImageError as exc:
        raise AccuracyError(str(exc)) from exc


def compare(output_dir: Path, labels_dir: Path, *, labels_desc: str | None = None,
            mapping: dict[int, int] | None = None,
            predicted_mapping: LabelMapping | None = None) -> pd.DataFrame:
    """Per scan and label: Dice and accuracy of the outputs against the manual labels.

    ``predicted_mapping`` translates the outputs first (e.g. an aseg model's label maps
    through ``aseg-to-drawem9``), so a finer label set is scored in the manual labels' own,
    coarser set; it must fit the outputs' label set."""
    label_set = output_label_set(output_dir)
    predicted = dseg_files(output_dir, f"{label_set.name}")
    if predicted_mapping is not None:
        if not predicted_mapping.fits(label_set):
            raise AccuracyError(f"{output_dir}: label set {label_set.name!r} is not the source "
                                f"of the mapping {predicted_mapping.name}")
        label_set = predicted_mapping.target
    manual = dseg_files(labels_dir, labels_desc)
    if not manual:
        raise AccuracyError(f"{labels_dir}: no _dseg files"
                            + (f" with desc-{labels_desc}" if labels_desc else ""))
    rows = []
    for key, manual_path in manual.items():
        if key not in predicted:
            raise AccuracyError(f"{manual_path}: no segmentation of {key} in {output_dir}")
        pred, pred_affine = load_labels(predicted[key])
        if predicted_mapping is not None:
            pred = predicted_mapping.apply(pred, predicted[key])
        ref, ref_affine = load_labels(manual_path)
        if ref.shape != pred.shape or not np.allclose(ref_affine, pred_affine, atol=1e-3):
            raise AccuracyError(f"{manual_path}: not on the grid of {predicted[key].name} "
                                f"(shape {ref.shape} vs {pred.shape})")
        table = overlap_table(pred, apply_mapping(ref, mapping), label_set)
        table.insert(0, "scan", key)
        rows.append(table)
    return pd.concat(rows, ignore_index=True)


def summary(per_scan: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation of Dice and accuracy per label over scans."""
    grouped = per_scan.groupby(["index", "name"], sort=True)
    return grouped.agg(scans=("dice", "count"), dice_mean=("dice", "mean"),
                       dice_sd=("dice", "std"), accuracy_mean=("accuracy", "mean"),
                       accuracy_sd=("accuracy", "std")).reset_index()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bids_infantseg.cli.accuracy",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", type=Path, help="bids_infantseg participant outputs")
    parser.add_argument("labels_dir", type=Path, help="derivatives folder of manual _dseg")
    parser.add_argument("--labels-desc", help="only manual dseg files with this desc")
    parser.add_argument("--map", type=Path, help='JSON {"manual index": model index}')
    parser.add_argument("--predicted-map", metavar="NAME|TSV",
                        help="score the outputs through this label mapping first (e.g. "
                             f"aseg-to-drawem9; shipped: {', '.join(shipped_mappings())})")
    parser.add_argument("--tsv", type=Path, help="write the per-scan table here")
    args = parser.parse_args(argv)
    try:
        mapping = read_mapping(args.map) if args.map else None
        predicted_mapping = (LabelMapping.load(args.predicted_map) if args.predicted_map
                             else None)
        per_scan = compare(args.output_dir, args.labels_dir, labels_desc=args.labels_desc,
                           mapping=mapping, predicted_mapping=predicted_mapping)
    except (AccuracyError, OSError, ValueError) as exc:
        print(f"accuracy: error: {exc}", file=sys.stderr)
        return 2
    if args.tsv:
        per_scan.to_csv(args.tsv, sep="\t", index=False, na_rep="n/a")
    table = summary(per_scan)
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
