"""The Nipype participant workflow: one sub-workflow per scan, run by one plugin.

conform -> segment -> restore -> measure -> qc -> report -> write, optionally preceded by
a rigid pose alignment to the age-matched template. Nipype caches every node in the work directory,
so a killed run started again redoes only what is missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.pipeline import engine as pe

from bids_infantseg.conform import GROUP_BYTES, SLAB_VOXELS
from bids_infantseg.discovery import Scan
from bids_infantseg.interfaces import (
    Conform,
    Measure,
    PoseNormalize,
    QualityControl,
    Restore,
    ScanReport,
    Segment,
    WriteDerivatives,
)
from bids_infantseg.model.card import ModelCard


@dataclass(frozen=True)
class SegmentSettings:
    """What every scan's workflow shares: the model, where outputs go and how to run."""

    model_card: Path
    model_sha256: str
    card: ModelCard
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
    (dense blocks keep about 6 feature maps of ``num_filters`` per level), plus torch itself;
    MC dropout adds two more class-first accumulators (the samples' mean and one sample).
    """
    voxels = 1
    for s in card.grid_shape:
        voxels *= s
    classes = len(card.labels)
    volumes = voxels * 4 * (1 + classes * (3.5 if mc_samples else 1.5))
    activations = 8 * 6 * card.architecture.num_filters * card.grid_shape[0] ** 2 * 4 * 2
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


def init_scan_wf(scan: Scan, settings: SegmentSettings, *,
                 pose_template: Path | None = None) -> pe.Workflow:
    """The workflow for one T2w scan; its last node writes the BIDS-Derivatives."""
    wf = pe.Workflow(name=scan_wf_name(scan))
    card_file = str(settings.model_card)

    conform = pe.Node(Conform(in_file=str(scan.path), model_card=card_file), name="conform")
    segment = pe.Node(
        Segment(model_card=card_file, model_sha256=settings.model_sha256,
                device=settings.device, batch_size=settings.batch_size,
                num_threads=settings.num_threads,
                use_gpu=settings.device.startswith("cuda"), mc_samples=settings.mc_samples,
                compile=settings.compile, tta_flip=settings.tta_flip,
                refine_em=settings.refine_em, refine_ventricles=settings.refine_ventricles),
        name="segment", mem_gb=inference_mem_gb(settings.card, settings.mc_samples),
        n_procs=settings.num_threads,
    )
    restore = pe.Node(Restore(native=str(scan.path), model_card=card_file,
                              write_probseg=settings.write_probseg),
                      name="restore", mem_gb=restore_mem_gb(native_voxels(scan.path),
                                                            settings.card,
                                                            settings.write_probseg))
    measure = pe.Node(Measure(model_card=card_file), name="measure")
    quality = pe.Node(QualityControl(model_card=card_file, scan_json=scan.to_json()),
                      name="qc")
    report = pe.Node(ScanReport(model_card=card_file, scan_json=scan.to_json(),
                                model_sha256=settings.model_sha256), name="report")
    write = pe.Node(
        WriteDerivatives(scan_json=scan.to_json(), output_dir=str(settings.output_dir),
                         model_card=card_file, model_sha256=settings.model_sha256,
                         inference_options=settings.inference_options),
        name="write", overwrite=True,  # cheap; re-creates outputs deleted since the last run
    )

    if pose_template is not None:
        pose = pe.Node(PoseNormalize(in_file=str(scan.path), template=str(pose_template)),
                       name="pose")
        wf.connect([(pose, conform, [("out_transform", "transform")]),
                    (pose, write, [("out_transform", "pose")]),
                    (pose, report, [("out_transform", "pose")])])

    wf.connect([
        (conform, segment, [("out_file", "in_file")]),
        (segment, restore, [("out_probs", "in_probs")]),
        (conform, restore, [("out_file", "conformed")]),
        (restore, measure, [("out_dseg", "in_dseg")]),
        (restore, write, [("out_dseg", "dseg"), ("out_mask", "mask"),
                          ("out_probseg", "probseg")]),
        (measure, write, [("out_tsv", "volumes")]),
        (segment, quality, [("out_qc", "in_qc"), ("out_probs", "in_probs")]),
        (restore, quality, [("out_dseg", "dseg")]),
        (measure, quality, [("out_tsv", "volumes")]),
        (restore, report, [("out_dseg", "dseg")]),
        (measure, report, [("out_tsv", "volumes")]),
        (quality, report, [("out_tsv", "qc_tsv"), ("out_json", "qc_json")]),
        (quality, write, [("out_tsv", "qc_tsv"), ("out_json", "qc_json")]),
        (report, write, [("out_html", "report")]),
    ])
    return wf


def init_participant_wf(scans: list[Scan], settings: SegmentSettings, work_dir: Path,
                        pose_templates: dict[str, Path] | None = None) -> pe.Workflow:
    """All scans side by side, so MultiProc can run them in parallel."""
    wf = pe.Workflow(name="bids_infantseg_wf", base_dir=str(work_dir))
    for scan in scans:
        template = (pose_templates or {}).get(scan.source_stem)
        wf.add_nodes([init_scan_wf(scan, settings, pose_template=template)])
    return wf
