"""Gain of each inference-side option on the held-out real fetal atlases, in one command.

    python benchmarks/refine_options.py --atlas-root /work/shared/data/fetal-sb-atlas-cc0 \\
        [--model NAME|FOLDER] [--work /tmp/refine-options] [--timing-image T2W.nii.gz] \\
        [--configs baseline refine-em ...] [--reuse]

Builds the three held-out atlases (``synth.ATLAS_HELD_OUT``) as BIDS datasets at 400 mL and
at native size (``benchmarks/fetal_atlas_bids.py``), then runs ``benchmarks/accuracy.py``
(the participant level as a user runs it, ``--nprocs 1 --omp-nthreads 1``) once per option
set of :data:`CONFIGS` on each, every option written out (on or off), so the defaults do not
matter. Writes ``WORK/table.md`` (per-label Dice averaged over the three atlases, the brain
mean, seconds per scan) and ``WORK/results.json``; each run's own files stay in
``WORK/acc/<size>-<config>/``. With ``--timing-image``, the whole participant level is also
timed on that one image (e.g. a 320³ MIT template) per option set. ``--reuse`` only re-reads
runs whose ``per_scan.tsv`` exists.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from bids_infantseg.synth import ATLAS_HELD_OUT

HERE = Path(__file__).resolve().parent
OFF = {"tta_flip": False, "refine_em": False, "refine_ventricles": False}
CONFIGS = {
    "baseline": {},
    "tta-flip": {"tta_flip": True},
    "refine-ventricles": {"refine_ventricles": True},
    "refine-em": {"refine_em": True},
    "em+ventricles": {"refine_em": True, "refine_ventricles": True},
    "all three": {"tta_flip": True, "refine_em": True, "refine_ventricles": True},
}
"""Option sets measured; each is applied over all options off."""

LABELS = {"Cerebrospinal fluid": "CSF", "Cortical grey matter": "cGM", "White matter": "WM",
          "Ventricles": "Ven", "Cerebellum": "Cbm", "Deep grey matter": "dGM",
          "Brainstem": "BS"}
"""The DrawEM9 labels the atlases hold (no Background, no hippocampus)."""

SIZES = {"400 mL": ["--scale-to-ml", "400"], "native": []}


def flags(config: dict[str, bool]) -> list[str]:
    """Every option written out, so a change of default cannot change what is measured."""
    return [f"--{'' if on else 'no-'}{name.replace('_', '-')}"
            for name, on in (OFF | config).items()]


def build_atlases(work: Path, atlas_root: Path) -> dict[str, Path]:
    folders = {}
    for size, extra in SIZES.items():
        folder = work / ("atlas-400" if extra else "atlas-native")
        if not (folder / "code" / "atlas-to-drawem9.json").exists():
            subprocess.run([sys.executable, str(HERE / "fetal_atlas_bids.py"), str(folder),
                            "--atlas-root", str(atlas_root), "--only", *ATLAS_HELD_OUT,
                            *extra], check=True)
        folders[size] = folder
    return folders


def measure(dataset: Path, results: Path, model: str, config: dict[str, bool],
            reuse: bool) -> dict:
    """Mean Dice per label over the atlases, brain mean, seconds per scan."""
    if not (reuse and (results / "per_scan.tsv").exists()):
        shutil.rmtree(results, ignore_errors=True)
        subprocess.run([sys.executable, str(HERE / "accuracy.py"), str(dataset),
                        str(dataset / "derivatives" / "manual"), "--results", str(results),
                        "--model", model, "--map", str(dataset / "code" / "atlas-to-drawem9.json"),
                        "--", "--nprocs", "1", "--omp-nthreads", "1", *flags(config)],
                       check=True, stdout=subprocess.DEVNULL)
    per_scan = pd.read_csv(results / "per_scan.tsv", sep="\t")
    dice = per_scan[per_scan["name"].isin(LABELS)].pivot(index="scan", columns="name",
                                                         values="dice")
    row = {LABELS[name]: float(dice[name].mean()) for name in LABELS}
    row["brain mean"] = float(dice.mean(axis=1).mean())
    row["per scan"] = {scan: round(float(v), 3) for scan, v in dice.mean(axis=1).items()}
    timing = results / "timing.json"
    row["s/scan"] = json.loads(timing.read_text())["seconds_per_scan"] if timing.exists() \
        else float("nan")
    return row


def time_image(image: Path, work: Path, model: str, config: dict[str, bool]) -> float:
    """Seconds of the whole participant level on one image (a fresh output folder)."""
    bids = work / "timing-bids"
    if not bids.exists():
        (bids / "sub-timing" / "anat").mkdir(parents=True)
        (bids / "dataset_description.json").write_text(
            '{"Name": "timing", "BIDSVersion": "1.10.0"}')
        shutil.copy(image, bids / "sub-timing" / "anat" / "sub-timing_T2w.nii.gz")
    out = work / "timing-out"
    shutil.rmtree(out, ignore_errors=True)
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bids_infantseg", str(bids), str(out), "participant",
                    "--model", model, "--nprocs", "1", "--omp-nthreads", "1", *flags(config)],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def table(results: dict) -> str:
    columns = [*LABELS.values(), "brain mean", "s/scan"]
    lines = ["| size | options | " + " | ".join(columns) + " | gain |",
             "|---|---|" + "---:|" * (len(columns) + 1)]
    for size, rows in results.items():
        if size == "timing":
            continue
        base = rows.get("baseline", {}).get("brain mean")
        for name, row in rows.items():
            gain = "" if base is None or name == "baseline" else \
                f"{row['brain mean'] - base:+.3f}"
            lines.append(f"| {size} | {name} | " + " | ".join(
                f"{row[c]:.1f}" if c == "s/scan" else f"{row[c]:.3f}" for c in columns)
                + f" | {gain} |")
    if "timing" in results:
        lines.append("\nWhole participant level on the timing image (s): " + ", ".join(
            f"{name} {s:.1f}" for name, s in results["timing"].items()))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atlas-root", type=Path, required=True,
                        help="folder of the CC0 fetal atlases (fetal_SB_atlas_GA*)")
    parser.add_argument("--model", default="default", help="bundled model name or folder")
    parser.add_argument("--work", type=Path, default=Path("/tmp/refine-options"))
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--timing-image", type=Path,
                        help="also time the whole participant level on this T2w per option set")
    parser.add_argument("--reuse", action="store_true",
                        help="re-read runs already done instead of running them again")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    folders = build_atlases(args.work, args.atlas_root)
    results: dict = {}
    for size, folder in folders.items():
        for name in args.configs:
            slug = f"{'400' if size == '400 mL' else 'native'}-{name.replace(' ', '-')}"
            row = measure(folder, args.work / "acc" / slug, args.model, CONFIGS[name],
                          args.reuse)
            results.setdefault(size, {})[name] = row
            print(f"{size:7s} {name:18s} brain mean {row['brain mean']:.3f} "
                  f"({row['s/scan']} s/scan)", flush=True)
    if args.timing_image:
        for name in args.configs:
            results.setdefault("timing", {})[name] = time_image(args.timing_image, args.work,
                                                                args.model, CONFIGS[name])
            print(f"timing  {name:18s} {results['timing'][name]:.1f} s", flush=True)
    (args.work / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    text = table(results)
    (args.work / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
