"""Command line: ``bids_infantseg BIDS_DIR OUTPUT_DIR {participant,group,train} [options]``.

Parses arguments and hands each analysis level to one function; nothing else lives here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from bids_infantseg import __version__

LOGGER = logging.getLogger("bids_infantseg")

EXIT_OK, EXIT_SCANS_FAILED, EXIT_USAGE = 0, 1, 2


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be a positive integer")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: must be 0 or a positive integer")
    return value


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object ({...})")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bids_infantseg",
        description="Segment first-year infant T2w brain MRI (QuickNAT) in a BIDS dataset.",
    )
    parser.add_argument("bids_dir", type=Path, help="the BIDS dataset (raw)")
    parser.add_argument("output_dir", type=Path,
                        help="where BIDS-Derivatives go (e.g. BIDS_DIR/derivatives/bids_infantseg)")
    parser.add_argument("analysis_level", choices=("participant", "group", "train"))
    parser.add_argument("--version", action="version", version=f"bids_infantseg {__version__}")

    sel = parser.add_argument_group("selecting scans")
    sel.add_argument("--participant-label", "--participant_label", dest="participant_label",
                     nargs="+", metavar="LABEL",
                     help="subjects to process (with or without 'sub-'); default: all")
    sel.add_argument("--session-label", "--session_label", dest="session_label", nargs="+",
                     metavar="LABEL", help="sessions to process (with or without 'ses-')")
    sel.add_argument("--bids-filter-file", "--bids_filter_file", dest="bids_filter_file",
                     type=Path, metavar="FILE",
                     help='JSON with a "t2w" query of BIDS entities, as in fMRIPrep')

    run = parser.add_argument_group("running")
    run.add_argument("-w", "--work-dir", "--work_dir", dest="work_dir", type=Path,
                     help="cache of intermediate results; a killed run resumes from it "
                          "(default: OUTPUT_DIR/.work)")
    run.add_argument("--nprocs", "--n-cpus", "--n_cpus", dest="nprocs", type=_positive_int,
                     default=os.cpu_count() or 1, help="processes for scans in parallel")
    run.add_argument("--omp-nthreads", "--omp_nthreads", dest="omp_nthreads",
                     type=_positive_int, help="threads per inference process "
                     "(default: all CPUs divided by concurrent scans)")
    run.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    run.add_argument("--batch-size", dest="batch_size", type=_positive_int, default=8,
                     help="2D slices per network call")
    run.add_argument("--plugin", metavar="NAME",
                     help="Nipype execution plugin (e.g. SLURM, SGE, MultiProc; default "
                          "Linear for --nprocs 1, else MultiProc)")
    run.add_argument("--plugin-args", "--plugin_args", dest="plugin_args", type=_json_object,
                     metavar="JSON", help="the plugin's arguments as a JSON object, e.g. "
                     '\'{"sbatch_args": "--gres=gpu:1 --time=1:00:00"}\'')
    run.add_argument("-v", "--verbose", action="count", default=0,
                     help="more logging (-vv for debug)")

    seg = parser.add_argument_group("segmentation")
    seg.add_argument("--model", default="default",
                     help="a bundled model name or a model folder (card.json + "
                          "model.safetensors); default: the bundled starter model")
    seg.add_argument("--write-probseg", action="store_true",
                     help="also write one probability map per label on the native grid")
    seg.add_argument("--mc-samples", dest="mc_samples", type=_non_negative_int, default=0,
                     metavar="N",
                     help="MC-dropout passes for per-label uncertainty in the QC report "
                          "(Bayesian QuickNAT); N more network passes; default 0: none")
    seg.add_argument("--pose-normalize", action="store_true",
                     help="rigidly align each scan to its age-matched MNIInfant template "
                          "before slicing (outputs stay on the native grid)")
    return parser


def _setup_logging(verbosity: int) -> None:
    """INFO by default, DEBUG with -v; other libraries' INFO only with -vv."""
    logging.basicConfig(level=logging.INFO if verbosity >= 2 else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    logging.getLogger("bids_infantseg").setLevel(logging.DEBUG if verbosity else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    if args.analysis_level == "group":
        from bids_infantseg.group import GroupError, run_group

        try:
            return run_group(args)
        except GroupError as exc:
            print(f"bids_infantseg: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.analysis_level != "participant":
        print(f"bids_infantseg: the {args.analysis_level} level is not yet implemented",
              file=sys.stderr)
        return EXIT_USAGE
    from bids_infantseg.participant import UserError, run_participant

    try:
        return run_participant(args)
    except UserError as exc:
        print(f"bids_infantseg: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
