"""The participant level: check inputs, find scans, run their workflow, report the outcome.

A bad scan is reported in one line and skipped; the others are still processed. A scan
counts as segmented only when all its outputs are on disk and readable, whatever the
workflow engine reported, and the exit status says whether any scan failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

from nipype import config as nipype_config

from bids_infantseg import __version__
from bids_infantseg.cli.failures import crash_reason, scan_failures
from bids_infantseg.core.ages import implausible_age
from bids_infantseg.core.inference import resolve_device
from bids_infantseg.core.qc import structures_skipped, summary_line
from bids_infantseg.core.refine import resolve_options
from bids_infantseg.io.derivatives import (
    check_output_dir,
    check_writable,
    write_bidsignore,
    write_dataset_description,
    write_dataset_files,
)
from bids_infantseg.io.discovery import Scan, discover, load_filter_file
from bids_infantseg.io.images import BadImageError, implausibilities, load_t2w
from bids_infantseg.io.scan_outputs import ScanOutputs, read_outputs, scan_outputs, sidecar
from bids_infantseg.io.templates import cohort_for_age, template_path
from bids_infantseg.model.card import load_model
from bids_infantseg.report.outputs import IGNORED as QC_IGNORED
from bids_infantseg.utils.errors import InfantsegError
from bids_infantseg.utils.interrupts import check_interrupted, interruptible
from bids_infantseg.utils.locks import LOCK_NAME, hold
from bids_infantseg.workflows.infantseg import SegmentSettings, init_participant_wf, scan_wf_name
from bids_infantseg.workflows.resources import (
    NIPYPE_LOG_LEVELS,
    RunPlan,
    available_cpus,
    check_plugin,
    plan_run,
    plugin_runner,
    set_nipype_logging,
)

LOGGER = logging.getLogger("bids_infantseg")


class ImplausibleInputError(InfantsegError, ValueError):
    """--strict and some input that no infant scan can be (each was logged in one line)."""


class UnusableInputError(InfantsegError, ValueError):
    """No selected image can be segmented (each was logged in one line)."""


FULL_DISK_BYTES = 1 << 20
"""Less free space than this (1 MiB) is a full file system: no scan's outputs fit in it."""


def run_participant(args: argparse.Namespace) -> int:
    """Segment every selected T2w scan; 0 when all succeeded, 1 when some failed, 2 when some
    input could not be used (the others are still segmented).

    From its checks to its end the run holds the lock of its work folder (one per selection
    of scans, see :func:`work_folder`): a second run on it refuses or waits. SIGINT and
    SIGTERM stop it (:class:`~bids_infantseg.utils.interrupts.Interrupted`), its workers stopped
    and its lock released.
    """
    with interruptible(), ExitStack() as held:
        return _run_participant(args, held)


def work_folder(root: Path, participant_labels: list[str] | None,
                session_labels: list[str] | None, filters: dict | None) -> Path:
    """The run's own folder under the work root, named by its selection of scans.

    ``all``, ``sub-01``, ``sub-01+02_ses-1``, plus ``_filter-<hash>`` with a BIDS filter
    file: runs of disjoint participants (a SLURM array) on one output folder and work root
    each get their own Nipype cache and lock, and a rerun of the same selection resumes
    from its folder. A name that would be long or odd becomes ``sel-<hash>``.
    """
    def labels(values: list[str], prefix: str) -> str:
        return prefix + "+".join(sorted({v.removeprefix(prefix) for v in values}))

    parts = [labels(participant_labels, "sub-") if participant_labels else "all"]
    if session_labels:
        parts.append(labels(session_labels, "ses-"))
    if filters:
        text = json.dumps(filters, sort_keys=True)
        parts.append("filter-" + hashlib.sha256(text.encode()).hexdigest()[:8])
    name = "_".join(parts)
    if len(name) > 64 or not re.fullmatch(r"[A-Za-z0-9+_-]+", name):
        name = "sel-" + hashlib.sha256(name.encode()).hexdigest()[:12]
    return Path(root) / name


def _run_participant(args: argparse.Namespace, held: ExitStack) -> int:
    bids_dir = args.bids_dir.resolve()
    output_dir = args.output_dir.resolve()
    check_output_dir(output_dir, bids_dir)
    check_plugin(args.plugin, args.plugin_args)
    device = resolve_device(args.device)
    model = load_model(args.model)  # fails early on a bad model, before any work
    options = resolve_options(model.card.labels, tta_flip=args.tta_flip,
                              refine_em=args.refine_em,
                              refine_ventricles=args.refine_ventricles)
    filters = load_filter_file(args.bids_filter_file) if args.bids_filter_file else None
    work_dir = work_folder((args.work_dir or output_dir / ".work").resolve(),
                           args.participant_label, args.session_label, filters)
    created = _missing_folders(output_dir, work_dir)
    check_writable(output_dir, "output")
    check_writable(work_dir, "work")
    held.enter_context(hold(work_dir, wait=args.wait_lock))

    with _removed_on_user_error(created):
        scans = discover(bids_dir, output_dir=output_dir, work_dir=work_dir,
                         participant_labels=args.participant_label,
                         session_labels=args.session_label, bids_filters=filters)
        good, unusable = _check_images(scans, strict=args.strict)
        pose_templates = _pose_templates(good) if args.pose_normalize else None

    write_dataset_description(output_dir, bids_dir=bids_dir, version=__version__)
    write_dataset_files(output_dir, model.card.labels)
    write_bidsignore(output_dir, QC_IGNORED)

    cpus = available_cpus()
    plan = plan_run(args.plugin, args.plugin_args, scans=len(good), cpus=cpus,
                    nprocs=args.nprocs, omp_nthreads=args.omp_nthreads,
                    gpu=str(device).startswith("cuda"))
    settings = SegmentSettings(
        model=model, output_dir=output_dir, bids_dir=bids_dir, write_probseg=args.write_probseg,
        device=str(device), batch_size=args.batch_size, num_threads=plan.threads,
        mc_samples=args.mc_samples, compile=args.compile, **options,
    )
    _log_plan(plan, args.omp_nthreads, cpus)
    LOGGER.info("model %s %s (sha256 %s) on %s, %d scan(s)", model.card.name,
                model.card.version, model.sha256[:12], device, len(good))
    if why := structures_skipped(model.card.labels):
        LOGGER.info("QC: %s", why)
    workflow_ok, crashes = _run_workflow(good, settings, work_dir, plan, pose_templates,
                                         _quiet_nipype(args.verbose))
    failed, segmented = _check_outputs(good, settings, crashes)
    _log_qc(segmented)
    LOGGER.info("%d of %d scan(s) segmented; outputs in %s", len(segmented), len(scans),
                output_dir)
    if unusable:
        LOGGER.error("%s skipped (listed above)", _count(unusable, "unusable input"))
    for line in failed:
        LOGGER.error("FAILED %s", line)
    if failed:
        _log_full_disks(output_dir, work_dir)
    if unusable:
        return 2
    return 1 if failed or not workflow_ok else 0


def _log_full_disks(*folders: Path) -> None:
    """One line per folder on a file system left with (almost) no space: the likely cause of
    its failed scans, whose crash files could not always be written to say so."""
    seen = set()
    for folder in folders:
        try:
            device, free = folder.stat().st_dev, shutil.disk_usage(folder).free
        except OSError:
            continue
        if device not in seen and free < FULL_DISK_BYTES:
            seen.add(device)
            LOGGER.error("the file system of %s is full (%d KiB free): make room, then rerun "
                         "the same command", folder, free // 1024)


def _missing_folders(*folders: Path) -> list[Path]:
    """``folders`` and their parents that do not exist yet, innermost first."""
    missing: list[Path] = []
    for folder in folders:
        for path in (folder, *folder.parents):
            if path.exists():
                break
            if path not in missing:
                missing.append(path)
    return sorted(missing, key=lambda p: len(p.parts), reverse=True)


@contextmanager
def _removed_on_user_error(created: list[Path]) -> Iterator[None]:
    """Remove the folders this run created when the block stops on a usage error, before
    any work: a mistyped ``--participant-label 99`` left ``OUTPUT/.work/sub-99`` behind.

    Only this run can have written into a work folder it created and holds the lock of
    (the index of the dataset); every other folder goes only if empty, since another run
    may share it.
    """
    try:
        yield
    except InfantsegError:
        for folder in created:
            if (folder / LOCK_NAME).exists():
                shutil.rmtree(folder, ignore_errors=True)
            else:
                with suppress(OSError):
                    folder.rmdir()
        raise


def _log_plan(plan: RunPlan, omp_nthreads: int | None, cpus: int) -> None:
    """How the CPUs are shared, and a warning when --omp-nthreads had to give way."""
    LOGGER.info("%s: %d scan(s) at once, %d thread(s) each, %d CPU(s) available",
                plan.plugin, plan.concurrent, plan.threads, cpus)
    if omp_nthreads and plan.threads < omp_nthreads:
        LOGGER.warning("--omp-nthreads %d lowered to %d: %d scan(s) at once on %d CPU(s) "
                       "(see --nprocs and --plugin-args)", omp_nthreads, plan.threads,
                       plan.concurrent, cpus)


def _check_outputs(scans: list[Scan], settings: SegmentSettings, crashes: dict[str, str]
                   ) -> tuple[list[str], list[tuple[Scan, object]]]:
    """One line per scan that crashed or whose outputs are not all on disk and readable, and
    the QC sidecar of every other scan as that check read it (for :func:`_log_qc`)."""
    failed, segmented = [], []
    for scan in scans:
        outputs = scan_outputs(scan, settings.output_dir, settings.card.labels,
                               settings.write_probseg)
        reasons = [crashes[name]] if (name := scan_wf_name(scan)) in crashes else []
        contents, problems = read_outputs(outputs)
        if problems:
            reasons.append(_describe(problems, outputs))
        if reasons:
            failed.append(f"{scan.path}: {'; '.join(reasons)}")
        else:
            segmented.append((scan, contents[sidecar(outputs.qc)]))
    return failed, segmented


def _log_qc(segmented: list[tuple[Scan, object]]) -> None:
    """One line per segmented scan from the QC sidecar it wrote: ``QC ok`` or its flags."""
    for scan, qc in segmented:
        try:
            flags = qc["QC"]["flags"]
        except (KeyError, TypeError):
            continue
        (LOGGER.warning if flags else LOGGER.info)("%s: %s", scan.source_stem,
                                                   summary_line(flags))


def _describe(problems: dict[Path, str], outputs: ScanOutputs) -> str:
    """The problems in a few words: all of them when only some outputs are missing."""
    if len(problems) == len(outputs.files()) and set(problems.values()) == {"missing"}:
        return f"nothing written (no {outputs.dseg.name})"
    return "; ".join(f"{path.name} {problem}" for path, problem in problems.items())


def _check_images(scans: list[Scan], strict: bool = False) -> tuple[list[Scan], list[str]]:
    """Open every image before any heavy work, so a bad file costs one line, not a crash:
    the scans to segment, and one line per unusable image (each logged once, here).

    What no infant scan can be (voxel sizes, field of view, head size, age) is one warning
    line per problem naming the file; with ``strict`` each is an error and nothing runs.
    Nothing runs either when no image is usable.
    """
    good, unusable, implausible = [], [], []
    for scan in scans:
        try:
            img = load_t2w(scan.path)
        except BadImageError as exc:
            LOGGER.error("%s", exc)
            unusable.append(str(exc))
            continue
        good.append(scan)
        problems = implausibilities(img)
        if scan.age is not None and (age := implausible_age(scan.age)):
            problems.append(age)
        for problem in problems:
            (LOGGER.error if strict else LOGGER.warning)("%s: %s", scan.path, problem)
        if problems:
            implausible.append(scan)
    if strict and implausible:
        raise ImplausibleInputError(f"{_count(implausible, 'implausible input')} with "
                                    "--strict (listed above); nothing was run")
    if not good:
        raise UnusableInputError(f"no usable input: {_count(unusable, 'image')} cannot be "
                                 "segmented (listed above); nothing was run")
    return good, unusable


def _count(items: list, noun: str) -> str:
    """``1 image``, ``3 images``."""
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _pose_templates(scans: list[Scan]) -> dict[str, Path]:
    """The age-matched MNIInfant template of each scan (youngest cohort without an age)."""
    templates = {}
    for scan in scans:
        cohort = cohort_for_age(scan.age.weeks if scan.age else None)
        templates[scan.source_stem] = template_path(cohort)
        LOGGER.info("%s: pose template MNIInfant cohort-%d", scan.source_stem, cohort)
    return templates


def _quiet_nipype(verbosity: int) -> tuple[dict[str, str], bool]:
    """Nipype's messages only with -v, its per-node chatter only with -vv; its own handler,
    not ours twice. Returns the levels and whether it is silent, which MultiProc's workers
    are given too (``resources.plugin_runner``)."""
    levels = dict.fromkeys(NIPYPE_LOG_LEVELS, "INFO" if verbosity >= 2 else "WARNING")
    set_nipype_logging(levels, silent=verbosity == 0)
    logging.getLogger("nipype").propagate = False
    return levels, verbosity == 0


def _run_workflow(scans: list[Scan], settings: SegmentSettings, work_dir: Path,
                  plan: RunPlan, pose_templates: dict[str, Path] | None = None,
                  nipype_logs: tuple[dict[str, str], bool] = ({}, False)
                  ) -> tuple[bool, dict[str, str]]:
    """Run all scans' workflows; whether the run finished, and each crashed scan's reason.

    Nipype raises both when a node crashed (the crash file says why; the others still ran)
    and when it could not run at all (e.g. its resource check): the latter, with no crash of
    this run to explain it, is logged here in one line.
    """
    crash_dir = work_dir / "crash"
    nipype_config.update_config({
        "execution": {"crashdump_dir": str(crash_dir), "crashfile_format": "txt",
                      "remove_unnecessary_outputs": False, "create_report": False,
                      "stop_on_first_crash": False},
        "monitoring": {"enabled": False},
    })
    nipype_config.enable_resource_monitor = False
    work_dir.mkdir(parents=True, exist_ok=True)
    wf = init_participant_wf(scans, settings, work_dir, pose_templates)
    started = {p.name for p in crash_dir.glob("crash-*")} if crash_dir.exists() else set()
    error = None
    try:
        with plugin_runner(plan, *nipype_logs) as runner:
            wf.run(plugin=runner, plugin_args=plan.plugin_args)
    except Exception as exc:  # Nipype raises whatever stopped it; the crash files tell which
        LOGGER.debug("the workflow stopped with an error", exc_info=True)
        error = exc
    check_interrupted()  # a signal that a node's interface swallowed
    by_name = {scan_wf_name(s): s for s in scans}
    crashes = scan_failures(crash_dir, set(by_name), started)
    if error is not None and not crashes:
        LOGGER.error("the workflow did not run to the end (%s plugin): %s", plan.plugin,
                     crash_reason(f"{type(error).__name__}: {error}"))
    return error is None or bool(crashes), crashes
