"""Does the unified train command learn what the two old entry points learnt, bit for bit?

    python benchmarks/train_same_as_before.py OLD_CHECKOUT WORK_DIR

``OLD_CHECKOUT`` is a copy of the code before the trainer refactor (e.g.
``git archive <commit> | tar -x -C OLD_CHECKOUT``). Each tiny run goes once through the old
code and once through this checkout, same seed, one thread, CPU, and the script compares
every tensor of the final checkpoints (weights and Adam moments), the shipped weights and
the per-epoch loss and learning rate:

- site training: a tiny pretrained model fine-tuned on labelled phantoms (stage I + stage II,
  lr decay 0.7 per epoch from a settings file), old and new ``bids_infantseg BIDS OUT train``;
- synthetic training: the old ``python -m bids_infantseg.train.starter`` against the train
  level given a synthetic-data configuration (procedural heads, from scratch, lr decay 0.8).

Prints one line per comparison and exits 1 if anything differs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

NEW = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(NEW))

from tests.model_factory import make_tiny_model  # noqa: E402
from tests.train.factory import labelled_dataset  # noqa: E402


def run(checkout: Path, args: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, *args], check=True, env=env, cwd=checkout,
                   stdout=subprocess.DEVNULL)


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[bool, str]:
    if a.keys() != b.keys():
        return False, f"different tensors: {sorted(set(a) ^ set(b))[:4]}"
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    return not differ, f"{len(a)} tensors, {len(differ)} differ{': ' + differ[0] if differ else ''}"


def compare(name: str, old: Path, new: Path) -> bool:
    ok = True
    for file in ("checkpoint.safetensors", "model.safetensors"):
        equal, note = same(load_file(old / file), load_file(new / file))
        print(f"{name}: {file}: {'identical' if equal else 'DIFFERENT'} ({note})")
        ok &= equal
    histories = [[(h["epoch"], h["stage"], h["loss"], h["lr"]) for h in
                  json.loads((folder / "checkpoint.json").read_text())["history"]]
                 for folder in (old, new)]
    verdict = "identical" if histories[0] == histories[1] else "DIFFERENT"
    print(f"{name}: (epoch, stage, loss, lr) {verdict}: {histories[1]}")
    return ok and histories[0] == histories[1]


def site(old_checkout: Path, work: Path) -> bool:
    root, labels = work / "bids", work / "bids" / "derivatives" / "labels"
    if not root.exists():
        labelled_dataset(root, ("01", "02", "03"))
    pretrained = make_tiny_model(work / "tiny")
    config = work / "site.json"
    config.write_text(json.dumps({"lr_decay": 0.7}))
    folders = []
    for tag, checkout in (("old", old_checkout), ("new", NEW)):
        out = work / f"site-{tag}"
        run(checkout, ["-m", "bids_infantseg", str(root), str(out), "train", "--labels",
                       str(labels), "--pretrained", str(pretrained),
                       "--views", "axial", "--cv", "none", "--epochs-classifier", "1",
                       "--epochs-all", "2", "--nprocs", "1", "--batch-size", "4",
                       "--max-slices-per-epoch", "12", "--device", "cpu", "--omp-nthreads",
                       "1", "--config", str(config)])
        (unit,) = (out / ".work" / "train").glob("*/final/lr-*/axial")
        model = out / "models" / "manual-from-tiny-test"
        (unit / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes())
        folders.append(unit)
    return compare("site", *folders)


def synthetic(old_checkout: Path, work: Path) -> bool:
    common = ["--steps-per-epoch", "2", "--batch-size", "2", "--lr", "2e-3", "--lr-decay",
              "0.8", "--skull-strip", "0.5", "--seed", "0", "--eval-procedural", "1",
              "--device", "cpu"]
    run(old_checkout, ["-m", "bids_infantseg.train.starter", "--out", str(work / "syn-old"),
                       "--work", str(work / "syn-old-work"), "--filters", "4", "--grid", "32",
                       "--voxel-size", "6", "--epochs", "3", "--workers", "0", "--threads",
                       "1", "--version", "0.0.1", *common])
    config = work / "procedural.json"
    config.write_text(json.dumps({"sources": [{"name": "procedural", "kind": "procedural"}]}))
    run(NEW, ["-m", "bids_infantseg", str(config), str(work / "syn-new"), "train", "-w",
              str(work / "syn-new-work"), "--pretrained", "none", "--num-filters", "4",
              "--grid-size", "32", "--voxel-size-mm", "6", "--epochs-all", "3", "--nprocs", "1",
              "--omp-nthreads", "1", "--model-version", "0.0.1", "--shared-views",
              "--weights-dtype", "float16", *common])
    old = work / "syn-old-work" / "shared"
    new = work / "syn-new-work" / "synthetic" / "drawem9-synth-starter" / "shared"
    (old / "model.safetensors").write_bytes((work / "syn-old" / "model.safetensors").read_bytes())
    (new / "model.safetensors").write_bytes(
        (work / "syn-new" / "models" / "drawem9-synth-starter" / "model.safetensors").read_bytes())
    return compare("synthetic", old, new)


def main(argv: list[str]) -> int:
    old_checkout, work = Path(argv[0]).resolve(), Path(argv[1]).resolve()
    work.mkdir(parents=True, exist_ok=True)
    results = [site(old_checkout, work), synthetic(old_checkout, work)]
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
