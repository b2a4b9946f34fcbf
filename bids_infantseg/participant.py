"""The participant level: check inputs, find scans, run their workflow, report the outcome.

A bad scan is reported in one line and skipped; the others are still processed, and the
exit status says whether any scan failed.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from nipype import config as nipype_config
from nipype import logging as nipype_logging
from nipype.pipeline import plugins as nipype_plugins

from bids_infantseg import __version__
from bids_infantseg.bids import DiscoveryError, FilterFileError, Scan, discover, load_filter_file
from bids_infantseg.derivatives import (
    OutputDirError,
    check_output_dir,
    write_bidsignore,
    write_dataset_description,
    write_dataset_files,
)
from bids_infantseg.failures import scan_failures
from bids_infantseg.images import BadImageError, load_t2w
from bids_infantseg.inference import DeviceError, resolve_device
from bids_infantseg.model.card import ModelError, load_model
from bids_infantseg.report.outputs import IGNORED as QC_IGNORED
from bids_infantseg.templates import TemplateError, cohort_for_age, template_path
from bids_infantseg.workflow import SegmentSettings, init_participant_wf, scan_wf_name

LOGGER = logging.getLogger("bids_infantseg")


class PluginError(ValueError):
    """A --plugin that Nipype does not have."""


UserError = (DiscoveryError, FilterFileError, OutputDirError, ModelError, DeviceError,
             TemplateError, PluginError)
"""Problems with the command line or its inputs: one line, exit status 2, nothing run."""


def run_participant(args: argparse.Namespace) -> int:
    """Segment every selected T2w scan; 0 when all succeeded, 1 when some failed."""
    bids_dir = args.bids_dir.resolve()
    output_dir = args.output_dir.resolve()
    work_dir = (args.work_dir or output_dir / ".work").resolve()
    check_output_dir(output_dir, bids_dir)
    plugin = choose_plugin(args.plugin, args.plugin_args, args.nprocs)
    device = resolve_device(args.device)
    model = load_model(args.model)  # fails early on a bad model, before any work
    filters = load_filter_file(args.bids_filter_file) if args.bids_filter_file else None

    scans = discover(bids_dir, output_dir=output_dir, work_dir=work_dir,
                     participant_labels=args.participant_label,
                     session_labels=args.session_label, bids_filters=filters)
    good, failed = _check_images(scans)
    pose_templates = _pose_templates(good) if args.pose_normalize else None

    output_dir.mkdir(parents=True, exist_ok=True)
    write_dataset_description(output_dir, bids_dir=bids_dir, version=__version__)
    write_dataset_files(output_dir, model.card.labels)
    write_bidsignore(output_dir, QC_IGNORED)

    concurrent = min(args.nprocs, max(len(good), 1))
    threads = args.omp_nthreads or max(1, (os.cpu_count() or 1) // concurrent)
    settings = SegmentSettings(
        model_card=model.path / "card.json", model_sha256=model.sha256, card=model.card,
        output_dir=output_dir, bids_dir=bids_dir, write_probseg=args.write_probseg,
        device=str(device), batch_size=args.batch_size, num_threads=threads,
        mc_samples=args.mc_samples, compile=args.compile,
    )
    LOGGER.info("model %s %s (sha256 %s) on %s, %d scan(s), %d in parallel, %d thread(s) each",
                model.card.name, model.card.version, model.sha256[:12], device, len(good),
                concurrent, threads)
    if good:
        _quiet_nipype(args.verbose)
        if plugin[0] == "MultiProc":
            plugin[1].setdefault("n_procs", concurrent)
            # Workers forked from a process whose torch threads have run deadlock in torch
            # (seen in grid_sample); the fork server starts them from a clean process.
            plugin[1].setdefault("mp_context", "forkserver")
        failed += _run_workflow(good, settings, work_dir, plugin, pose_templates)
    done = len(scans) - len(failed)
    LOGGER.info("%d of %d scan(s) segmented; outputs in %s", done, len(scans), output_dir)
    for line in failed:
        LOGGER.error("FAILED %s", line)
    return 1 if failed else 0


def _check_images(scans: list[Scan]) -> tuple[list[Scan], list[str]]:
    """Open every image before any heavy work, so a bad file costs one line, not a crash."""
    good, failed = [], []
    for scan in scans:
        try:
            load_t2w(scan.path)
        except BadImageError as exc:
            LOGGER.error("%s", exc)
            failed.append(str(exc))
        else:
            good.append(scan)
    return good, failed


def _pose_templates(scans: list[Scan]) -> dict[str, Path]:
    """The age-matched MNIInfant template of each scan (youngest cohort without an age)."""
    templates = {}
    for scan in scans:
        cohort = cohort_for_age(scan.age.weeks if scan.age else None)
        templates[scan.source_stem] = template_path(cohort)
        LOGGER.info("%s: pose template MNIInfant cohort-%d", scan.source_stem, cohort)
    return templates


def _quiet_nipype(verbosity: int) -> None:
    """Nipype's per-node chatter only with -vv; its own handler, not ours twice."""
    level = "INFO" if verbosity >= 2 else "WARNING"
    nipype_config.update_config({"logging": {"workflow_level": level, "interface_level": level,
                                             "utils_level": level}})
    nipype_logging.update_logging(nipype_config)
    logging.getLogger("nipype").propagate = False


def choose_plugin(name: str | None, plugin_args: dict | None,
                  nprocs: int) -> tuple[str, dict]:
    """Nipype plugin and its arguments: the user's, else Linear for one process, else MultiProc.

    Linear for one process because it runs in this process: no pickling, plain tracebacks.
    """
    if name is None:
        return ("MultiProc", {**(plugin_args or {})}) if nprocs > 1 else ("Linear", {})
    if not hasattr(nipype_plugins, f"{name}Plugin"):
        known = sorted(n[:-len("Plugin")] for n in dir(nipype_plugins)
                       if n.endswith("Plugin") and n != "Plugin")
        raise PluginError(f"--plugin {name}: not a Nipype plugin ({', '.join(known)})")
    return name, {**(plugin_args or {})}


def _run_workflow(scans: list[Scan], settings: SegmentSettings, work_dir: Path,
                  plugin: tuple[str, dict], pose_templates: dict[str, Path] | None) -> list[str]:
    """Run all scans' workflows; return one line per scan whose workflow failed."""
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
    try:
        wf.run(plugin=plugin[0], plugin_args=plugin[1])
    except RuntimeError:
        LOGGER.debug("workflow finished with errors", exc_info=True)
    by_name = {scan_wf_name(s): s for s in scans}
    return [f"{by_name[name].path}: {message}"
            for name, message in scan_failures(crash_dir, set(by_name), started).items()]
