"""The segmentation as an embeddable Nipype workflow, and the participant level built on it.

:func:`init_infantseg_wf` segments one T2w image (inputnode: the image and the age; outputnode:
label map, brain mask, probabilities, volumes, QC, report): [pose] -> conform -> segment ->
restore -> measure -> qc -> report. It knows nothing of BIDS, so other pipelines embed it;
``ds_workflows.py`` writes its outputs as BIDS-Derivatives. The participant level runs one
such pair per scan, side by side in one workflow. Nipype caches every node in the work
directory, so a killed run started again redoes only what is missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from bids_infantseg.core.conform import GROUP_BYTES, SLAB_VOXELS
from bids_infantseg.core.refine import resolve_options
from bids_infantseg.interfaces.segmentation import (
    Conform,
    Measure,
    PoseNormalize,
    QualityControl,
    Restore,
    ScanReport,
    Segment,
)
from bids_infantseg.io.discovery import Scan
from bids_infantseg.model.architectures import architecture_of
from bids_infantseg.model.card import CARD_FILE, Model, ModelCard
from bids_infantseg.workflows.outputs import DERIVATIVE_FIELDS, init_infantseg_derivatives_wf

DEFAULT_NATIVE_VOXELS = 256**3
"""Voxels the restore node's memory request assumes when the images are not known yet."""

INFANTSEG_INPUTS = ("t2w", "age_months", "scan_info")
INFANTSEG_OUTPUTS = DERIVATIVE_FIELDS


@dataclass(frozen=True)
class SegmentSettings:
    """What every scan's workflow shares: the model, where outputs go and how to run."""

    model: Model
    output_dir: Path
    bids_dir: Path
    write_probseg: bool
    device: str
    batch_size: int
    num_threads: int
    mc_samples: int = 0
    compile: str = "auto"
    tta_flip: bool = False
    refine_em: bool = False
    refine_ventricles: bool = False

    @property
    def card(self) -> ModelCard:
        return self.model.card

    @property
    def inference_options(self) -> list[str]:
        """The inference-side options on, as command-line flags (for provenance)."""
        return [f"--{name.replace('_', '-')}" for name in ("tta_flip", "refine_em",
                                                           "refine_ventricles")
                if getattr(self, name)]


def scan_wf_name(scan: Scan) -> str:
    """A Nipype-safe, unique name per scan (its source entities)."""
    return "scan_" + re.sub(r"[^0-9a-zA-Z]", "_", scan.source_stem)


def inference_mem_gb(card: ModelCard, mc_samples: int = 0) -> float:
    """Peak memory of the segment node, so MultiProc does not oversubscribe RAM.

    Input volume, class-first fp32 accumulator and its fp16 copy, a batch of activations
    (the architecture's feature maps per pixel, ``model.architectures``), plus torch itself;
    MC dropout adds two more class-first accumulators (the samples' mean and one sample).
    """
    voxels = 1
    for s in card.grid_shape:
        voxels *= s
    classes = len(card.labels)
    volumes = voxels * 4 * (1 + classes * (3.5 if mc_samples else 1.5))
    maps = architecture_of(card.architecture).feature_maps(card.architecture)
    activations = 8 * maps * card.grid_shape[0] ** 2 * 4 * 2
    return round(0.5 + (volumes + activations) / 2**30, 2)


def restore_mem_gb(native_voxels: int, card: ModelCard, write_probseg: bool) -> float:
    """Peak memory of the restore node, which grows with the native grid.

    Python and torch, the model-grid probabilities (float16 file pages and a float32 copy of
    a group of classes), one slab of resampled classes (at most ``SLAB_VOXELS`` target voxels:
    the group's samples twice, plus coordinates) and the native label map with its mask and
    reoriented copies (about 10 bytes a voxel, 16 more while a probability map is written).
    Measured with 10 classes on 0.9, 8 and 33 M native voxels: 0.60, 0.96 and 1.17 GB peak;
    this gives 0.64, 1.03 and 1.28.
    """
    grid_voxels = int(np.prod(card.grid_shape))
    classes = len(card.labels)
    group = min(classes, max(1, GROUP_BYTES // (4 * grid_voxels)))
    grid = grid_voxels * (2 * classes + 4 * group)
    slab = min(native_voxels, SLAB_VOXELS) * (8 * group + 24)
    native = native_voxels * (26 if write_probseg else 10)
    return round(0.45 + (grid + slab + native) / 2**30, 2)


def native_voxels(path: Path) -> int:
    """Voxels of an image's 3D grid, from its header alone."""
    return int(np.prod(nib.load(path).shape[:3]))


def init_infantseg_wf(*, model: Model, device: str = "cpu", batch_size: int = 8,
                      num_threads: int = 1, mc_samples: int = 0, compile: str = "auto",
                      tta_flip: bool | None = None, refine_em: bool | None = None,
                      refine_ventricles: bool | None = None, probseg: bool = False,
                      pose_template: Path | None = None, native_voxels: int | None = None,
                      name: str = "infantseg_wf") -> pe.Workflow:
    """Segment one T2w image; embeddable in any Nipype workflow (nothing here needs BIDS).

    inputnode: ``t2w`` (the image), ``age_months`` (postnatal age, or None / unset when
    unknown: QC's age-dependent bounds are then skipped), ``scan_info`` (optional: the
    report's lines about the scan, e.g. ``{"participant": "sub-01"}``).
    outputnode: ``dseg`` (label map on the image's grid), ``mask`` (brain mask),
    ``probseg`` (one probability map per label, only with ``probseg=True``), ``volumes``
    (TSV), ``qc_tsv`` and ``qc_json`` (per-label QC and scan-level flags), ``report`` (HTML),
    ``pose`` (the rigid alignment, only with ``pose_template``).

    ``model``: a :func:`~bids_infantseg.model.card.load_model` result. The inference options
    default as on the command line (``refine.DEFAULTS``, where the label set allows).
    ``native_voxels``: voxels of the images it will see, for the restore node's memory
    request (MultiProc); default 256^3. Device, batch size and threads do not change the
    cached results; the model's checksum and the options do.
    """
    card_file = str(model.path / CARD_FILE)
    options = resolve_options(model.card.labels, tta_flip=tta_flip, refine_em=refine_em,
                              refine_ventricles=refine_ventricles)
    wf = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=list(INFANTSEG_INPUTS)), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=list(INFANTSEG_OUTPUTS)),
                         name="outputnode")

    conform = pe.Node(Conform(model_card=card_file), name="conform")
    segment = pe.Node(
        Segment(model_card=card_file, model_sha256=model.sha256, device=device,
                batch_size=batch_size, num_threads=num_threads,
                use_gpu=device.startswith("cuda"), mc_samples=mc_samples, compile=compile,
                **options),
        name="segment", mem_gb=inference_mem_gb(model.card, mc_samples), n_procs=num_threads,
    )
    restore = pe.Node(Restore(model_card=card_file, write_probseg=probseg), name="restore",
                      mem_gb=restore_mem_gb(native_voxels or DEFAULT_NATIVE_VOXELS,
                                            model.card, probseg))
    measure = pe.Node(Measure(model_card=card_file), name="measure")
    quality = pe.Node(QualityControl(model_card=card_file), name="qc")
    report = pe.Node(ScanReport(model_card=card_file, model_sha256=model.sha256),
                     name="report")

    if pose_template is not None:
        pose = pe.Node(PoseNormalize(template=str(pose_template)), name="pose")
        wf.connect([(inputnode, pose, [("t2w", "in_file")]),
                    (pose, conform, [("out_transform", "transform")]),
                    (pose, report, [("out_transform", "pose")]),
                    (pose, outputnode, [("out_transform", "pose")])])

    wf.connect([
        (inputnode, conform, [("t2w", "in_file")]),
        (inputnode, restore, [("t2w", "native")]),
        (inputnode, quality, [("age_months", "age_months")]),
        (inputnode, report, [("t2w", "t2w"), ("age_months", "age_months"),
                             ("scan_info", "scan_info")]),
        (conform, segment, [("out_file", "in_file")]),
        (segment, restore, [("out_probs", "in_probs")]),
        (conform, restore, [("out_file", "conformed")]),
        (restore, measure, [("out_dseg", "in_dseg")]),
        (segment, quality, [("out_qc", "in_qc"), ("out_probs", "in_probs")]),
        (restore, quality, [("out_dseg", "dseg")]),
        (measure, quality, [("out_tsv", "volumes")]),
        (restore, report, [("out_dseg", "dseg")]),
        (measure, report, [("out_tsv", "volumes")]),
        (quality, report, [("out_tsv", "qc_tsv"), ("out_json", "qc_json")]),
        (restore, outputnode, [("out_dseg", "dseg"), ("out_mask", "mask"),
                               ("out_probseg", "probseg")]),
        (measure, outputnode, [("out_tsv", "volumes")]),
        (quality, outputnode, [("out_tsv", "qc_tsv"), ("out_json", "qc_json")]),
        (report, outputnode, [("out_html", "report")]),
    ])
    return wf


def report_info(scan: Scan) -> dict[str, str]:
    """The report's lines about a BIDS scan: where it is, whose, the age and its source."""
    age = ("unknown (no age in scans.tsv, sessions.tsv or participants.tsv)"
           if scan.age is None else
           f"{scan.age.weeks:.1f} weeks ({scan.age.months:.1f} months), "
           f"from {scan.age.source}")
    return {"source image": scan.rel_path, "participant": f"sub-{scan.subject}",
            "session": f"ses-{scan.session}" if scan.session else "n/a",
            "age used": age, "sex": scan.sex or "n/a"}


def init_scan_wf(scan: Scan, settings: SegmentSettings, *,
                 pose_template: Path | None = None) -> pe.Workflow:
    """One scan of the participant level: :func:`init_infantseg_wf`, then its
    BIDS-Derivatives (``init_infantseg_derivatives_wf``, the label map written last)."""
    wf = pe.Workflow(name=scan_wf_name(scan))
    age_months = scan.age.months if scan.age else None
    segment_wf = init_infantseg_wf(
        model=settings.model, device=settings.device, batch_size=settings.batch_size,
        num_threads=settings.num_threads, mc_samples=settings.mc_samples,
        compile=settings.compile, tta_flip=settings.tta_flip, refine_em=settings.refine_em,
        refine_ventricles=settings.refine_ventricles, probseg=settings.write_probseg,
        pose_template=pose_template, native_voxels=native_voxels(scan.path))
    segment_wf.inputs.inputnode.t2w = str(scan.path)
    segment_wf.inputs.inputnode.age_months = age_months
    segment_wf.inputs.inputnode.scan_info = report_info(scan)
    ds_wf = init_infantseg_derivatives_wf(
        bids_root=settings.bids_dir, output_dir=settings.output_dir, model=settings.model,
        probseg=settings.write_probseg, inference_options=settings.inference_options)
    ds_wf.inputs.inputnode.source_file = str(scan.path)
    ds_wf.inputs.inputnode.age_months = age_months
    ds_wf.inputs.inputnode.age_source = scan.age.source if scan.age else None
    wf.connect([(segment_wf, ds_wf, [(f"outputnode.{field}", f"inputnode.{field}")
                                     for field in INFANTSEG_OUTPUTS])])
    return wf


def init_participant_wf(scans: list[Scan], settings: SegmentSettings, work_dir: Path,
                        pose_templates: dict[str, Path] | None = None) -> pe.Workflow:
    """All scans side by side, so MultiProc can run them in parallel."""
    wf = pe.Workflow(name="bids_infantseg_wf", base_dir=str(work_dir))
    for scan in scans:
        template = (pose_templates or {}).get(scan.source_stem)
        wf.add_nodes([init_scan_wf(scan, settings, pose_template=template)])
    return wf
