"""Command line: ``bids_infantseg BIDS_DIR OUTPUT_DIR {participant,group,train} [options]``.

Parses arguments and hands each analysis level to one function; nothing else lives here.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from bids_infantseg import __version__
from bids_infantseg.model.labels import BUILTIN
from bids_infantseg.resources import available_cpus

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
    run.add_argument("--compile", choices=("auto", "always", "never"), default="auto",
                     help="torch.compile the network on CPU (auto: when the work repays it)")
    run.add_argument("--plugin", metavar="NAME",
                     help="Nipype execution plugin (e.g. SLURM, SGE, MultiProc; default "
                          "Linear for --nprocs 1, else MultiProc)")
    run.add_argument("--plugin-args", "--plugin_args", dest="plugin_args", type=_json_object,
                     metavar="JSON", help="the plugin's arguments as a JSON object, e.g. "
                     '\'{"sbatch_args": "--gres=gpu:1 --time=1:00:00"}\'')
    run.add_argument("--wait-lock", dest="wait_lock", action="store_true",
                     help="when another run holds this run's work folder (same -w and "
                          "selection of participants), wait for it instead of exiting with "
                          "status 2")
    run.add_argument("--strict", action="store_true",
                     help="inputs no infant scan can be (voxel sizes, field of view, head "
                          "size, an age outside -20..150 weeks) are errors: exit 2, nothing "
                          "run (default: a warning line each)")
    run.add_argument("-v", "--verbose", action="count", default=0,
                     help="-v: also debug lines and tracebacks; -vv: also Nipype's "
                          "per-node lines and other libraries' information")

    seg = parser.add_argument_group("segmentation")
    seg.add_argument("--model", default="default",
                     help="a bundled model name or a model folder (card.json + "
                          "model.safetensors); default: the bundled starter model")
    seg.add_argument("--label-set", dest="label_set", choices=tuple(BUILTIN),
                     help="segment into this label set with its bundled model "
                          "(<label set>-synth-starter): drawem9 (9 tissues, the default) or "
                          "aseg (lateralised FreeSurfer aseg structures); --model overrides it")
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

    trn = parser.add_argument_group(
        "training (train level)",
        "Fine-tune a model on manual labels, or train one from scratch, with subject-level "
        "cross-validation; writes OUTPUT_DIR/models/<name>/ (see docs/training.md). Here "
        "--nprocs counts the processes that cache volumes and load slices (divided among "
        "torchrun's processes), --batch-size is the slices per step of each training "
        "process, and under torchrun every process trains on a share of each epoch (DDP).")
    trn.add_argument("--labels", type=Path, metavar="DERIV_DIR",
                     help="BIDS-Derivatives folder of _dseg label maps on the T2w grids, "
                          "with their dseg.tsv lookup table (or BIDS_DIR itself, when the "
                          "label maps lie beside the scans)")
    trn.add_argument("--labels-desc", "--labels_desc", dest="labels_desc", metavar="D",
                     help="use only label maps with desc-D (e.g. drawem9 in the dHCP release)")
    trn.add_argument("--labels-map", "--labels_map", dest="labels_map", metavar="NAME|FILE",
                     help="map the label maps' values onto a built-in label set: a shipped "
                          "mapping (aseg-to-drawem9, for FreeSurfer asegs such as Baby Open "
                          "Brains') or a <source>-to-<target>.tsv file; lookup tables are "
                          "then not needed")
    trn.add_argument("--pretrained", metavar="NAME|PATH|none",
                     help="model to fine-tune (default: the bundled model); none trains "
                          "from scratch")
    trn.add_argument("--views", metavar="V[,V...]",
                     help="views to train (default axial,coronal,sagittal)")
    trn.add_argument("--config", type=Path, metavar="FILE",
                     help="JSON object of training settings (the flags' names); flags given "
                          "on the command line win")
    trn.add_argument("--cv", metavar="loso|kfold:K|none",
                     help="cross-validation by subject (default loso)")
    trn.add_argument("--epochs-classifier", dest="epochs_classifier", type=_non_negative_int,
                     metavar="N", help="stage I epochs, the new classifier alone (default 15)")
    trn.add_argument("--epochs-all", dest="epochs_all", type=_non_negative_int, metavar="N",
                     help="stage II epochs, all layers (default 50)")
    trn.add_argument("--lr", type=float, metavar="RATE", help="Adam learning rate (1e-3)")
    trn.add_argument("--lr-grid", dest="lr_grid", metavar="paper|R,R,...",
                     help="cross-validate several rates and keep the best by Dice; 'paper': "
                          "nine rates 1e-5, 3e-5, ..., 1e-1")
    trn.add_argument("--max-slices-per-epoch", dest="max_slices_per_epoch",
                     type=_positive_int, metavar="N",
                     help="draw N slices per epoch instead of all (short runs, large studies)")
    trn.add_argument("--seed", type=_non_negative_int, metavar="N",
                     help="seed of every random draw (default 0)")
    trn.add_argument("--model-name", dest="model_name", metavar="NAME",
                     help="folder name under OUTPUT_DIR/models (default <labels>-from-"
                          "<pretrained> or <labels>-scratch)")
    trn.add_argument("--shared-views", dest="shared_views", action="store_true", default=None,
                     help="one network trained on and serving all views")
    trn.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                     help="no intensity or spatial augmentation")
    trn.add_argument("--no-final", dest="final", action="store_false", default=None,
                     help="cross-validate only; do not train the model on all subjects")
    return parser


def _given_options(argv: list[str] | None) -> set[str]:
    """Destinations of the options written on the command line (defaults left out), so that
    a train ``--config`` file can override defaults but not what the user typed."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


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
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    if args.analysis_level == "group":
        from bids_infantseg.group import GroupError, run_group

        try:
            return run_group(args)
        except GroupError as exc:
            print(f"bids_infantseg: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.analysis_level == "train":
        from bids_infantseg.train.site import TrainError, run_train

        try:
            return run_train(args, _given_options(argv))
        except TrainError as exc:
            print(f"bids_infantseg: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    from bids_infantseg.interrupts import Interrupted
    from bids_infantseg.participant import UserError, run_participant

    try:
        args.model = model_for_label_set(args.model, args.label_set)
        return run_participant(args)
    except Interrupted as exc:  # its workers stopped, its lock released; the cache kept
        print(f"bids_infantseg: interrupted ({exc.signame}); rerun the same command to "
              "finish the missing scans", file=sys.stderr)
        return exc.exit_status
    except UserError as exc:
        print(f"bids_infantseg: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a file system failing after the checks; the traceback with -v
        LOGGER.debug("traceback", exc_info=True)
        print(f"bids_infantseg: error: {exc}", file=sys.stderr)
        return EXIT_SCANS_FAILED
