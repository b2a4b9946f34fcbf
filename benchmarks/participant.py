"""Seconds per scan and peak memory of the participant level, configurations side by side.

    python benchmarks/participant.py [--bids DIR] [--model NAME|PATH] [--config "--nprocs 1" ...]
                                     [--repeat N] [--cold-compile] [--atropos]
                                     [--atropos-python PYTHON]

Each configuration runs the real command line (``bids_infantseg ... participant``) in a fresh
process with fresh output and work folders. Figures printed per configuration: wall seconds,
seconds per scan, peak resident memory of the largest process, and the share of the summed
node time spent in each workflow step (from Nipype's own runtime records), CPU seconds
(user + system, of all processes: less sensitive to other load than wall time), and the share
of the wall time spent outside the segment step (the network with its slicing and view
averaging): start-up, discovery, conform, restore, measure, QC, report and writing. The first
configuration is the baseline the others' ratios refer to; with ``--repeat`` the
configurations run in turn N times and medians are printed; ``--cold-compile`` gives each run
an empty inductor cache (``TORCHINDUCTOR_CACHE_DIR``), so compiling costs what it costs on
a machine that never compiled the model. Without ``--bids`` the demo
dataset is written to a temporary folder. ``--atropos`` adds the classical baseline on the
same scans: ANTs Atropos 3-class k-means/EM tissue segmentation (antspyx, not a dependency
of the package: ``pip install antspyx``, which pins older numpy and scipy, so best in its own
environment given by ``--atropos-python``), timed the same way in a fresh process. To compare
two versions of the code, run it once with ``PYTHONPATH`` set to a checkout of the baseline
(the runs start in a scratch folder, so the source tree you run from does not shadow it).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

CHILD = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc.returncode, "wall": wall, "peak_mib": usage.ru_maxrss / 1024,
                  "cpu": usage.ru_utime + usage.ru_stime, "stderr": rc.stderr[-2000:]}))
"""


ATROPOS = """
import json, resource, sys, time
import ants
start = time.perf_counter()
for path in sys.argv[1:]:
    image = ants.image_read(path)
    mask = ants.get_mask(image)
    ants.atropos(a=image, x=mask, i="kmeans[3]", m="[0.2,1x1x1]", c="[5,0]")
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": wall, "peak_mib": usage.ru_maxrss / 1024,
                  "cpu": usage.ru_utime + usage.ru_stime, "scans": len(sys.argv) - 1}))
"""


def run_atropos(bids: Path, python: str) -> dict:
    scans = sorted(str(p) for p in bids.glob("sub-*/**/anat/*_T2w.nii*"))
    child = subprocess.run([python, "-c", ATROPOS, *scans], capture_output=True,
                           text=True, check=True)
    return json.loads(child.stdout)


def step_seconds(work_dir: Path) -> dict[str, float]:
    """Summed run time of each workflow step over all scans, from Nipype's result files."""
    from nipype.utils.filemanip import loadpkl

    totals: dict[str, float] = defaultdict(float)
    for result_file in work_dir.rglob("result_*.pklz"):
        runtime = getattr(loadpkl(result_file), "runtime", None)
        if runtime is not None and getattr(runtime, "duration", None) is not None:
            totals[result_file.parent.name] += float(runtime.duration)
    return dict(totals)


def run_config(bids: Path, model: str, extra: list[str], scratch: Path,
               cold_compile: bool) -> dict:
    out, work = scratch / "out", scratch / "work"
    scratch.mkdir(parents=True, exist_ok=True)
    if Path(model).exists():
        model = str(Path(model).resolve())
    cmd = [sys.executable, "-m", "bids_infantseg", str(bids.resolve()), str(out), "participant",
           "--model", model, "-w", str(work), *extra]
    env = dict(os.environ)
    if cold_compile:
        env["TORCHINDUCTOR_CACHE_DIR"] = str(scratch / "inductor")
    # run in the scratch folder: ``python -m`` puts the working folder first on sys.path, which
    # from a source checkout would shadow a baseline given by PYTHONPATH
    child = subprocess.run([sys.executable, "-c", CHILD, *cmd], capture_output=True, text=True,
                           check=True, env=env, cwd=scratch)
    record = json.loads(child.stdout)
    if record["rc"] != 0:
        raise SystemExit(f"{shlex.join(cmd)} exited {record['rc']}:\n{record['stderr']}")
    record["scans"] = len(list(out.rglob("*_dseg.nii.gz")))
    record["steps"] = step_seconds(work)
    return record


def median_record(records: list[dict]) -> dict:
    """The median of repeated runs of one configuration: wall, peak memory, step seconds."""
    steps = {s for r in records for s in r["steps"]}
    return {"scans": records[0]["scans"],
            "wall": statistics.median(r["wall"] for r in records),
            "cpu": statistics.median(r["cpu"] for r in records),
            "peak_mib": statistics.median(r["peak_mib"] for r in records),
            "steps": {s: statistics.median(r["steps"].get(s, 0.0) for r in records)
                      for s in steps}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bids", type=Path, help="a BIDS dataset (default: the demo)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--config", action="append", metavar="ARGS",
                        help='extra participant options, e.g. "--nprocs 1" (repeatable; '
                             'the first is the baseline)')
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the configurations in turn this many times; print medians")
    parser.add_argument("--cold-compile", action="store_true",
                        help="an empty inductor cache for every run (cold compile cost)")
    parser.add_argument("--atropos", action="store_true",
                        help="also time ANTs Atropos 3-class segmentation on the same scans")
    parser.add_argument("--atropos-python", default=sys.executable,
                        help="a Python with antspyx installed (default: this one)")
    args = parser.parse_args(argv)
    configs = args.config or ["--nprocs 1", "--nprocs 2"]

    with tempfile.TemporaryDirectory(prefix="bench-participant-") as tmp:
        bids = args.bids
        if bids is None:
            from bids_infantseg.cli.demo import write_demo_dataset

            bids = write_demo_dataset(Path(tmp) / "demo")
        runs: list[list[dict]] = [[] for _ in configs]
        for r in range(args.repeat):
            for i, config in enumerate(configs):
                started = time.strftime("%H:%M:%S")
                print(f"[{r + 1}.{i + 1}/{args.repeat}.{len(configs)}] {started} running: "
                      f"{config}", flush=True)
                runs[i].append(run_config(bids, args.model, shlex.split(config),
                                          Path(tmp) / f"run{r}-{i}", args.cold_compile))
        results = [median_record(r) for r in runs]
        atropos = run_atropos(bids, args.atropos_python) if args.atropos else None

    base = results[0]
    print(f"\nparticipant level on {bids} with model {args.model}")
    print(f"{'configuration':<36}{'scans':>6}{'wall s':>9}{'s/scan':>9}{'cpu s/scan':>11}"
          f"{'segment':>9}{'outside':>9}{'peak MiB':>10}{'x baseline':>12}")
    for config, r in zip(configs, results, strict=True):
        scans = max(r["scans"], 1)
        segment = r["steps"].get("segment", 0.0)
        ratio = base["wall"] / r["wall"]
        print(f"{config:<36}{r['scans']:>6}{r['wall']:>9.1f}{r['wall'] / scans:>9.1f}"
              f"{r['cpu'] / scans:>11.1f}{segment / scans:>9.1f}"
              f"{100 * (1 - segment / r['wall']):>8.0f}%{r['peak_mib']:>10.0f}{ratio:>11.2f}x")
    if atropos:
        print(f"{'ANTs Atropos, 3 classes':<36}{atropos['scans']:>6}{atropos['wall']:>9.1f}"
              f"{atropos['wall'] / atropos['scans']:>9.1f}"
              f"{atropos['cpu'] / atropos['scans']:>11.1f}{'-':>9}{'-':>9}"
              f"{atropos['peak_mib']:>10.0f}{base['wall'] / atropos['wall']:>11.2f}x")
    print("cpu: user+system seconds of all processes (robust to other load on the machine); "
          "segment: wall seconds per scan in the segment step; outside: share of the wall "
          "time spent elsewhere")
    print("\nshare of summed node time per step")
    steps = sorted({s for r in results for s in r["steps"]})
    print(f"{'configuration':<36}" + "".join(f"{s:>10}" for s in steps))
    for config, r in zip(configs, results, strict=True):
        total = sum(r["steps"].values()) or 1.0
        print(f"{config:<36}" + "".join(
            f"{100 * r['steps'].get(s, 0.0) / total:>9.0f}%" for s in steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
