"""Gain of each inference-side option on the held-out real fetal atlases, in one command.

    python benchmarks/refine_options.py --atlas-root /work/shared/data/fetal-sb-atlas-cc0 \\
        [--model NAME|FOLDER] [--work /tmp/refine-options] [--timing-image T2W.nii.gz] \\
        [--synthetic-config configs/drawem9-synth-starter.json] \\
        [--configs baseline refine-em ...] [--reuse]

Builds the three held-out atlases (``synth.ATLAS_HELD_OUT``) as BIDS datasets at 400 mL and
at native size (``benchmarks/fetal_atlas_bids.py``), then runs ``benchmarks/accuracy.py``
(the participant level as a user runs it, ``--nprocs 1 --omp-nthreads 1``) once per option
set of :data:`CONFIGS` on each, every option written out (on or off), so the defaults do not
matter. Writes ``WORK/table.md`` (per-label Dice averaged over the three atlases, the brain
mean, seconds per scan) and ``WORK/results.json``; each run's own files stay in
``WORK/acc/<size>-<config>/``. With ``--timing-image`` (e.g. a 320³ MIT template), the
whole participant level is also timed on that one image per option set, and each option's
own cost on its model grid (one thread, best of ``--repeats``): the network with and
without flip averaging, the EM refinement, the ventricle rule; on a busy machine the
whole-run times are noisy, the parts less so. ``--reuse`` only re-reads runs whose
``per_scan.tsv`` exists.

With ``--synthetic-config`` (a training configuration; its sources' data are found as
training finds them, e.g. ``BIDS_INFANTSEG_DATA=../shared/data``), every option set is also
scored on the held-out synthetic volumes of ``train.evaluate`` (a procedural head and one
head per held-out file of the configuration, at 0, 6 and 12 months, full heads and
skull-stripped), on the model grid: the check that an option learnt nothing about the
atlases alone (fetal, skull-stripped, no bias field) that hurts infant heads.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bids_infantseg.core import refine
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


def synthetic_check(config: Path, model_spec: str, names: list[str]) -> dict:
    """Mean brain Dice (the labels but Hip) per option set, input (full head, skull-stripped)
    and age, on the held-out synthetic volumes; each volume's network probabilities are
    computed once unmirrored and once flip averaged."""
    import torch

    from bids_infantseg.core.inference import predict_with_qc
    from bids_infantseg.model.card import load_model
    from bids_infantseg.synth.sources import SourceMix
    from bids_infantseg.train.data import SynthSource, draw_volume
    from bids_infantseg.train.evaluate import dice_per_label, heldout_cases

    torch.set_num_threads(1)
    model = load_model(model_spec)
    card, labels = model.card, model.card.labels
    held_out = SourceMix.load(config, held_out=True).sources
    cases = heldout_cases(held_out, 1)
    scored = list(LABELS.values())
    results: dict = {}
    for strip, kind in ((0.0, "full head"), (1.0, "skull-stripped")):
        for age in (0.0, 6.0, 12.0):
            per_config: dict[str, list[float]] = {name: [] for name in names}
            for anatomies in cases.values():
                for i, anatomy in enumerate(anatomies):
                    rng = np.random.default_rng([1, int(round(age * 10)), i])
                    image, truth = draw_volume(card, SynthSource(skull_strip=strip), rng,
                                               age_months=age, anatomy=anatomy)
                    network = {flip: predict_with_qc(model, image, flip=flip).probs
                               for flip in {bool(CONFIGS[n].get("tta_flip")) for n in names}}
                    for name in names:
                        config_on = OFF | CONFIGS[name]
                        probs = network[config_on["tta_flip"]]
                        if config_on["refine_em"]:
                            probs = refine.refine_em(image, probs, refine.brain_classes(labels))[0]
                        if config_on["refine_ventricles"]:
                            probs = refine.refine_ventricles(probs,
                                                             refine.fluid_classes(labels))[0]
                        dice = dice_per_label(probs.argmax(axis=0), truth, card)
                        per_config[name].append(float(np.nanmean([dice[a] for a in scored])))
            for name, values in per_config.items():
                results.setdefault(kind, {}).setdefault(name, {})[f"{age:g} months"] = \
                    float(np.mean(values))
            print(f"synthetic {kind} {age:g} months: " + ", ".join(
                f"{n} {np.mean(v):.3f}" for n, v in per_config.items()), flush=True)
    return results


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
    done = subprocess.run([sys.executable, "-m", "bids_infantseg", str(bids), str(out),
                           "participant", "--model", model, "--nprocs", "1", "--omp-nthreads",
                           "1", *flags(config)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"participant level failed: {done.stderr[-2000:]}")
    return time.perf_counter() - began


def option_costs(image: Path, model_spec: str, repeats: int) -> dict[str, float]:
    """Seconds of each part of the segment step on ``image``'s model grid, one thread, the
    best of ``repeats``: the network without and with flip averaging, EM, ventricle rule."""
    import torch

    from bids_infantseg.core.conform import conform, intensity_center
    from bids_infantseg.core.inference import predict_with_qc
    from bids_infantseg.io.images import load_t2w
    from bids_infantseg.model.card import load_model

    torch.set_num_threads(1)
    model = load_model(model_spec)
    img = load_t2w(image)
    data = np.asanyarray(img.dataobj)
    volume, _ = conform(data, img.affine, model.card.voxel_size_mm, model.card.grid_shape,
                        intensity=model.card.intensity,
                        center_world=intensity_center(data, img.affine))
    labels = model.card.labels

    def best(work):
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            result = work()
            times.append(time.perf_counter() - began)
        return min(times), result

    costs = {}
    costs["network"], plain = best(lambda: predict_with_qc(model, volume).probs)
    costs["network, flip averaged"], _ = best(lambda: predict_with_qc(model, volume, flip=True))
    costs["EM refinement"], em = best(lambda: refine.refine_em(volume, plain,
                                                               refine.brain_classes(labels))[0])
    costs["ventricle rule"], _ = best(lambda: refine.refine_ventricles(
        em, refine.fluid_classes(labels)))
    return costs


def table(results: dict) -> str:
    columns = [*LABELS.values(), "brain mean", "s/scan"]
    lines = ["| size | options | " + " | ".join(columns) + " | gain |",
             "|---|---|" + "---:|" * (len(columns) + 1)]
    for size, rows in results.items():
        if size in ("timing", "costs", "synthetic"):
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
    if "synthetic" in results:
        ages = list(next(iter(next(iter(results["synthetic"].values())).values())))
        lines += ["\nHeld-out synthetic volumes, brain mean Dice on the model grid:\n",
                  "| input | options | " + " | ".join(ages) + " |",
                  "|---|---|" + "---:|" * len(ages)]
        for kind, rows in results["synthetic"].items():
            lines += [f"| {kind} | {name} | " + " | ".join(f"{row[a]:.3f}" for a in ages) + " |"
                      for name, row in rows.items()]
    if "costs" in results:
        lines.append("\nParts of the segment step on its model grid, one thread (s): " + ", ".join(
            f"{name} {s:.2f}" for name, s in results["costs"].items()))
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
    parser.add_argument("--synthetic-config", type=Path,
                        help="also score the options on this training configuration's "
                             "held-out synthetic volumes")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs of each part for --timing-image's option costs (best kept)")
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
        results["costs"] = option_costs(args.timing_image, args.model, args.repeats)
        print("costs  ", results["costs"], flush=True)
    if args.synthetic_config:
        results["synthetic"] = synthetic_check(args.synthetic_config, args.model, args.configs)
    (args.work / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    text = table(results)
    (args.work / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
