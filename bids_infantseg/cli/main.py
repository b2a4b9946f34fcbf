"""Command line: ``bids_infantseg BIDS_DIR OUTPUT_DIR {participant,group,train} [options]``.

Parses arguments and hands each analysis level to one function; nothing else lives here.
One parser serves the three levels (the level stays the third positional, as BIDS Apps
require); each option group names the levels that take it, and an option given to another
level is a usage error, not silently ignored.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from bids_infantseg import __version__
from bids_infantseg.model.labels import BUILTIN
from bids_infantseg.train.settings import add_arguments as add_train_arguments
from bids_infantseg.utils.errors import InfantsegError
from bids_infantseg.workflows.resources import available_cpus

LOGGER = logging.getLogger("bids_infantseg")

EXIT_OK, EXIT_SCANS_FAILED, EXIT_USAGE = 0, 1, 2
LEVELS = ("participant", "group", "train")


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


def _levels_text(levels: tuple[str, ...]) -> str:
    return f"{' and '.join(levels)} level{'s' if len(levels) > 1 else ''}"


class LevelParser(argparse.ArgumentParser):
    """The parser of all levels; ``levels`` holds, per option (its ``dest``), its name and
    the levels that take it (options outside a level group are every level's)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.levels: dict[str, tuple[str, tuple[str, ...]]] = {}

    def level_group(self, title: str, levels: tuple[str, ...],
                    description: str | None = None) -> _LevelGroup:
        return _LevelGroup(self, title, levels, description)

    def given(self, argv: list[str] | None) -> set[str]:
        """Destinations of the level options written on the command line: ``argv`` parsed
        into a namespace that already holds each of them (argparse sets a default only
        where the namespace has none), so what changed was typed."""
        unset = object()
        namespace = self.parse_args(argv, argparse.Namespace(**dict.fromkeys(self.levels,
                                                                              unset)))
        return {dest for dest in self.levels if getattr(namespace, dest) is not unset}

    def misplaced(self, level: str, given: set[str]) -> list[str]:
        """One phrase per given option that ``level`` does not take, in --help order."""
        return [f"argument {name}: an option of the {_levels_text(levels)}, not of {level}"
                for dest, (name, levels) in self.levels.items()
                if dest in given and level not in levels]


class _LevelGroup:
    """An argument group whose options only ``levels`` take; records each in the parser."""

    def __init__(self, parser: LevelParser, title: str, levels: tuple[str, ...],
                 description: str | None) -> None:
        self._group = parser.add_argument_group(f"{title} ({_levels_text(levels)})", description)
        self._parser, self._levels = parser, levels

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        action = self._group.add_argument(*args, **kwargs)
        self._parser.levels[action.dest] = ("/".join(action.option_strings), self._levels)
        return action


def build_parser() -> LevelParser:
    parser = LevelParser(
        prog="bids_infantseg",
        usage="%(prog)s BIDS_DIR OUTPUT_DIR {participant,group,train} [options]",
        description="Segment first-year infant T2w brain MRI (QuickNAT) in a BIDS dataset. "
                    "Each option group below names the analysis levels that take its options; "
                    "an option given to another level is a usage error (exit status 2).",
    )
    parser.add_argument("bids_dir", type=Path, metavar="BIDS_DIR",
                        help="the BIDS dataset (raw)")
    parser.add_argument("output_dir", type=Path, metavar="OUTPUT_DIR",
                        help="where BIDS-Derivatives go (e.g. BIDS_DIR/derivatives/bids_infantseg)")
    parser.add_argument("analysis_level", choices=LEVELS,
                        help="participant: segment scans; group: study tables and report from "
                             "the participant outputs; train: fit a model on manual labels")
    parser.add_argument("--version", action="version", version=f"bids_infantseg {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="-v: also debug lines and tracebacks; -vv: also Nipype's "
                             "per-node lines and other libraries' information")

    sel = parser.level_group("selecting scans", ("participant", "train"))
    sel.add_argument("--participant-label", "--participant_label", dest="participant_label",
                     nargs="+", metavar="LABEL",
                     help="subjects to process (with or without 'sub-'); default: all")
    sel.add_argument("--session-label", "--session_label", dest="session_label", nargs="+",
                     metavar="LABEL", help="sessions to process (with or without 'ses-')")
    sel.add_argument("--bids-filter-file", "--bids_filter_file", dest="bids_filter_file",
                     type=Path, metavar="FILE",
                     help='JSON with a "t2w" query of BIDS entities, as in fMRIPrep')

    run = parser.level_group("running", ("participant", "train"))
    run.add_argument("-w", "--work-dir", "--work_dir", dest="work_dir", type=Path,
                     help="cache of intermediate results, one locked subfolder per selection "
                          "of participants (e.g. sub-01, all); a killed run resumes from it "
                          "(default: OUTPUT_DIR/.work)")
    run.add_argument("--nprocs", "--n-cpus", "--n_cpus", dest="nprocs", type=_positive_int,
                     default=available_cpus(),
                     help="scans at once (default: the CPUs this process may use, from its "
                          "affinity, cgroup quota and SLURM allocation)")
    run.add_argument("--omp-nthreads", "--omp_nthreads", dest="omp_nthreads",
                     type=_positive_int, help="threads per scan's inference, at most the "
                     "CPUs' share of each scan at once (default: that share)")
    run.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    run.add_argument("--batch-size", dest="batch_size", type=_positive_int, default=8,
                     help="2D slices per network call")
    prun = parser.level_group("running", ("participant",))
    prun.add_argument("--compile", choices=("auto", "always", "never"), default="auto",
                     help="torch.compile the network on CPU (auto: when the work repays it)")
    prun.add_argument("--plugin", metavar="NAME",
                     help="Nipype execution plugin (e.g. SLURM, SGE, MultiProc; default "
                          "Linear for --nprocs 1, else MultiProc)")
    prun.add_argument("--plugin-args", "--plugin_args", dest="plugin_args", type=_json_object,
                     metavar="JSON", help="the plugin's arguments as a JSON object, e.g. "
                     '\'{"sbatch_args": "--gres=gpu:1 --time=1:00:00"}\'')
    prun.add_argument("--wait-lock", dest="wait_lock", action="store_true",
                     help="when another run holds this run's work folder (same -w and "
                          "selection of participants), wait for it instead of exiting with "
                          "status 2")
    strict = parser.level_group("checking", ("participant", "group"))
    strict.add_argument("--strict", action="store_true",
                        help="participant: inputs no infant scan can be (voxel sizes, field "
                             "of view, head size, an age outside -20..150 weeks) are errors: "
                             "exit 2, nothing run (default: a warning line each); group: exit "
                             "1 when a scan's outputs are missing, unusable or partial, or a "
                             "participant has none (the rest is still summarised)")

    lab = parser.level_group("label set", ("participant", "train"))
    lab.add_argument("--label-set", dest="label_set", choices=tuple(BUILTIN),
                     help="participant: segment into this label set with its bundled model "
                          "(<label set>-synth-starter): drawem9 (9 tissues, the default: the "
                          "aseg network's probabilities summed into them) or aseg "
                          "(lateralised FreeSurfer aseg structures); --model overrides it. "
                          "train, synthetic: the labels the new model outputs")

    seg = parser.level_group("segmentation", ("participant",))
    seg.add_argument("--model", default="default",
                     help="a bundled model name or a model folder (card.json + "
                          "model.safetensors); default: the bundled starter model")
    seg.add_argument("--write-probseg", action="store_true",
                     help="also write one probability map per label on the native grid")
    seg.add_argument("--mc-samples", dest="mc_samples", type=_non_negative_int, default=0,
                     metavar="N",
                     help="MC-dropout passes for per-label uncertainty in the QC report "
                          "(Bayesian QuickNAT); N more network passes; default 0: none")
    seg.add_argument("--tta-flip", dest="tta_flip", action=argparse.BooleanOptionalAction,
                     help="also segment the left-right mirror image and average (2/3 more "
                          "network time; off by default: measured gain 0.001-0.003 Dice)")
    seg.add_argument("--refine-em", dest="refine_em", action=argparse.BooleanOptionalAction,
                     help="refit each brain label's intensity to the scan (EM, the network's "
                          "probabilities as priors); on by default (--no-refine-em: off)")
    seg.add_argument("--refine-ventricles", dest="refine_ventricles",
                     action=argparse.BooleanOptionalAction,
                     help="enclosed CSF next to the ventricles and bordered by deep tissue is "
                          "ventricle, ventricle in the extra-axial space is CSF (connectivity; "
                          "labels CSF, Ven and cGM needed); off by default: no measured gain")
    seg.add_argument("--pose-normalize", action="store_true",
                     help="rigidly align each scan to its age-matched MNIInfant template "
                          "before slicing (outputs stay on the native grid)")

    trn = parser.level_group(
        "training", ("train",),
        "Fine-tune a model on manual labels, or train one from scratch, with subject-level "
        "cross-validation (BIDS_DIR a BIDS dataset), or train on synthetic images (BIDS_DIR a "
        "synthetic-data configuration, configs/*.json); writes OUTPUT_DIR/models/<name>/ (see "
        "docs/training.md). Every setting is also a key of --config FILE. Here --nprocs counts "
        "the processes that cache volumes and load slices (or draw synthetic volumes), "
        "divided among torchrun's processes, --batch-size is the slices per step of each "
        "training process, and under torchrun every process trains on a share of each epoch "
        "(DDP).")
    trn.add_argument("--config", type=Path, metavar="FILE",
                     help="JSON object of training settings (the flags' names); flags given "
                          "on the command line win")
    trn.add_argument("--from-checkpoint", dest="from_checkpoint", action="store_true",
                     help="synthetic training: do not train, ship the last checkpoint in the "
                          "work folder as it is")
    add_train_arguments(trn)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line; an option of another level than the one given is a usage
    error (one line naming it and the levels that take it, exit status 2). At the train
    level the settings files (``--config``, a synthetic-data configuration) become the
    parser's defaults, so typed flags win over them."""
    parser = build_parser()
    args = parser.parse_args(argv)
    misplaced = parser.misplaced(args.analysis_level, parser.given(argv))
    if misplaced:
        parser.error("; ".join(misplaced))
    if args.analysis_level == "train":
        from bids_infantseg.train.settings import config_defaults

        parser.set_defaults(**config_defaults(args.bids_dir, args.config))
        args = parser.parse_args(argv)
    return args


def model_for_label_set(model: str, label_set: str | None) -> str:
    """``--model`` as given, or with ``--label-set`` (and no ``--model``) the bundled model
    of that label set; a ModelError where none is bundled."""
    if not label_set or model != "default":
        return model
    from bids_infantseg.model.card import ModelError, bundled_model_names
    from bids_infantseg.train.starter import MODEL_NAME

    name = MODEL_NAME.format(labels=label_set)
    bundled = bundled_model_names()
    if name not in bundled:
        raise ModelError(f"--label-set {label_set}: no bundled model {name} (bundled: "
                         f"{', '.join(bundled) or 'none'}); train one (docs/training.md) and "
                         "give its folder with --model")
    return name


def _setup_logging(verbosity: int) -> None:
    """INFO by default, DEBUG with -v; other libraries' INFO only with -vv."""
    logging.basicConfig(level=logging.INFO if verbosity >= 2 else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    logging.getLogger("bids_infantseg").setLevel(logging.DEBUG if verbosity else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except InfantsegError as exc:  # a settings file of the train level
        print(f"bids_infantseg: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _setup_logging(args.verbose)
    try:
        return _run_level(args, argv)
    except InfantsegError as exc:  # a usage error or unusable input, at any level
        LOGGER.debug("traceback", exc_info=True)
        print(f"bids_infantseg: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _run_level(args: argparse.Namespace, argv: list[str] | None) -> int:
    if args.analysis_level == "group":
        from bids_infantseg.cli.group import run_group

        return run_group(args)
    if args.analysis_level == "train":
        from bids_infantseg.train.site import run_train

        return run_train(args)
    from bids_infantseg.cli.participant import run_participant
    from bids_infantseg.utils.interrupts import Interrupted

    args.model = model_for_label_set(args.model, args.label_set)
    try:
        return run_participant(args)
    except Interrupted as exc:  # its workers stopped, its lock released; the cache kept
        print(f"bids_infantseg: interrupted ({exc.signame}); rerun the same command to "
              "finish the missing scans", file=sys.stderr)
        return exc.exit_status
    except OSError as exc:  # a file system failing after the checks; the traceback with -v
        LOGGER.debug("traceback", exc_info=True)
        print(f"bids_infantseg: error: {exc}", file=sys.stderr)
        return EXIT_SCANS_FAILED
