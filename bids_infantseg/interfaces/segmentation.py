"""Nipype interfaces of the segmentation steps: thin wrappers that read files, call a pure
function, write files.

Each interface's hashed inputs are what changes its result (files, model checksum,
settings); device, batch size and threads are ``nohash`` so changing them keeps the cache.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from bids_infantseg.core import qc
from bids_infantseg.core.ages import WEEKS_PER_MONTH
from bids_infantseg.core.conform import (
    Grid,
    conform,
    intensity_center,
    restore_labels,
    restore_probabilities,
)
from bids_infantseg.core.pose import load_transform, rigid_to_template, save_transform
from bids_infantseg.core.volumes import label_volumes
from bids_infantseg.io.images import load_t2w
from bids_infantseg.model.card import ModelCard, read_card
from bids_infantseg.report.outputs import qc_sidecar
from bids_infantseg.report.scan import scan_report

LOGGER = logging.getLogger("bids_infantseg")


def card_of(card_file: str) -> ModelCard:
    """The model card of a node's ``model_card`` input (the card file in its folder)."""
    return read_card(Path(card_file).parent)


class _ConformInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="native T2w image")
    model_card = File(exists=True, mandatory=True, desc="card.json of the model")
    transform = File(exists=True, desc="pose JSON (4x4 native-world -> template-world)")


class _ConformOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="intensity-normalised volume on the model grid")


class Conform(SimpleInterface):
    """Native image -> model grid (canonical RAS, the card's voxel size and intensity scale)."""

    input_spec = _ConformInputSpec
    output_spec = _ConformOutputSpec

    def _run_interface(self, runtime):
        card = card_of(self.inputs.model_card)
        img = load_t2w(self.inputs.in_file)
        data = np.asanyarray(img.dataobj)
        rotation = None
        if isdefined(self.inputs.transform):
            pose = load_transform(Path(self.inputs.transform))
            rotation = pose.transform if pose.accepted else None
        volume, grid = conform(data, img.affine, card.voxel_size_mm, card.grid_shape,
                               intensity=card.intensity,
                               center_world=intensity_center(data, img.affine),
                               rotation=rotation)
        out = os.path.abspath("conformed.nii.gz")
        nib.save(nib.Nifti1Image(volume, grid.affine), out)
        self._results["out_file"] = out
        return runtime


class _PoseInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="native T2w image")
    template = File(exists=True, mandatory=True, desc="age-matched template")


class _PoseOutputSpec(TraitedSpec):
    out_transform = File(exists=True, desc="pose JSON: transform, accepted, metric, message")


class PoseNormalize(SimpleInterface):
    """Rigid alignment to the template (SimpleITK); falls back to the header when doubtful."""

    input_spec = _PoseInputSpec
    output_spec = _PoseOutputSpec

    def _run_interface(self, runtime):
        img = load_t2w(self.inputs.in_file)
        result = rigid_to_template(np.asanyarray(img.dataobj), img.affine,
                                   Path(self.inputs.template))
        level = logging.INFO if result.accepted else logging.WARNING
        LOGGER.log(level, "%s: pose %s", self.inputs.in_file, result.message)
        out = os.path.abspath("pose.json")
        save_transform(result, Path(out))
        self._results["out_transform"] = out
        return runtime


class _SegmentInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="conformed volume")
    model_card = File(exists=True, mandatory=True)
    model_sha256 = traits.Str(mandatory=True, desc="weights checksum: new weights, new result")
    device = traits.Str("cpu", usedefault=True, nohash=True)
    batch_size = traits.Int(8, usedefault=True, nohash=True)
    num_threads = traits.Int(1, usedefault=True, nohash=True)
    use_gpu = traits.Bool(False, usedefault=True, nohash=True,
                          desc="tells MultiProc to count this node against n_gpu_procs")
    mc_samples = traits.Int(0, usedefault=True, desc="MC-dropout passes for uncertainty")
    compile = traits.Enum("auto", "always", "never", usedefault=True, nohash=True,
                          desc="torch.compile on CPU: auto compiles when it pays")
    tta_flip = traits.Bool(False, usedefault=True, desc="left-right flip averaging")
    refine_em = traits.Bool(False, usedefault=True, desc="per-scan EM intensity refinement")
    refine_ventricles = traits.Bool(False, usedefault=True,
                                    desc="ventricles vs CSF by connectivity")


class _SegmentOutputSpec(TraitedSpec):
    out_probs = File(exists=True, desc="class probabilities (C, X, Y, Z), float16 .npy")
    out_qc = File(exists=True, desc="per-view argmax, MC entropy and class counts (.npz)")


class Segment(SimpleInterface):
    """QuickNAT on every view's slices; softmax averaged across views.

    The model comes from the process's cache (:func:`~bids_infantseg.core.inference.shared_model`),
    so scans run in one process load, and compile, the network once.
    """

    input_spec = _SegmentInputSpec
    output_spec = _SegmentOutputSpec

    def _run_interface(self, runtime):
        import torch

        from bids_infantseg.core.inference import predict_with_qc, shared_model

        torch.set_num_threads(self.inputs.num_threads)
        model = shared_model(Path(self.inputs.model_card).parent, device=self.inputs.device)
        if model.sha256 != self.inputs.model_sha256:
            raise RuntimeError(f"{model.path}: weights changed while running "
                               f"(sha256 {model.sha256[:12]} != {self.inputs.model_sha256[:12]})")
        volume = np.asanyarray(nib.load(self.inputs.in_file).dataobj, dtype=np.float32)
        # on a GPU, float16 halves the copy to the host; on a CPU the float32 accumulator is
        # handed over as it is and converted to the file's float16 one class at a time
        on_gpu = torch.device(self.inputs.device).type == "cuda"
        result = predict_with_qc(model, volume, device=self.inputs.device,
                                 batch_size=self.inputs.batch_size,
                                 mc_samples=self.inputs.mc_samples, compile=self.inputs.compile,
                                 dtype=torch.float16 if on_gpu else torch.float32,
                                 flip=self.inputs.tta_flip, refine_em=self.inputs.refine_em,
                                 refine_ventricles=self.inputs.refine_ventricles)
        out = os.path.abspath("probabilities.npy")
        save_probabilities(out, result.probs)
        self._results["out_probs"] = out
        qc = {"views": np.array(list(result.view_labels)),
              "view_labels": np.stack(list(result.view_labels.values()))}
        if result.entropy is not None:
            qc |= {"entropy": result.entropy.astype(np.float16),
                   "sample_counts": result.sample_counts}
        self._results["out_qc"] = os.path.abspath("qc_arrays.npz")
        np.savez_compressed(self._results["out_qc"], **qc)
        return runtime


def save_probabilities(path: str, probs: np.ndarray) -> None:
    """``probs`` as a float16 ``.npy``, written a class at a time (no whole float16 copy).

    Plain writes, not a memory map: on a full disk a write raises ENOSPC, where storing into
    a mapped page killed the whole run with SIGBUS ("Fatal Python error: Bus error").
    """
    dtype = np.dtype(np.float16)
    with open(path, "wb") as out:
        np.lib.format.write_array_header_1_0(out, {
            "descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
            "shape": tuple(probs.shape)})
        for k in range(probs.shape[0]):
            out.write(np.ascontiguousarray(probs[k], dtype=dtype).tobytes())


class _RestoreInputSpec(BaseInterfaceInputSpec):
    in_probs = File(exists=True, mandatory=True)
    conformed = File(exists=True, mandatory=True, desc="gives the model grid's affine")
    native = File(exists=True, mandatory=True, desc="the input T2w: target grid")
    model_card = File(exists=True, mandatory=True)
    write_probseg = traits.Bool(False, usedefault=True)


class _RestoreOutputSpec(TraitedSpec):
    out_dseg = File(exists=True, desc="label map on the native grid")
    out_mask = File(exists=True, desc="brain mask on the native grid")
    out_probseg = InputMultiObject(File(exists=True), desc="per-label probabilities")


class Restore(SimpleInterface):
    """Probabilities back onto the native grid, then argmax; brain mask from the labels."""

    input_spec = _RestoreInputSpec
    output_spec = _RestoreOutputSpec

    def _run_interface(self, runtime):
        card = card_of(self.inputs.model_card)
        native = nib.load(self.inputs.native)
        shape, affine = native.shape[:3], native.affine
        grid_img = nib.load(self.inputs.conformed)
        grid = Grid(tuple(grid_img.shape), grid_img.affine)
        probs = np.load(self.inputs.in_probs, mmap_mode="r")
        labels = restore_labels(probs, grid, shape, affine, card.labels.indices)
        header = _label_header(native)
        self._results["out_dseg"] = _save(labels.astype(np.int16), affine, header, "dseg.nii.gz")
        mask = np.isin(labels, card.labels.brain_indices).astype(np.uint8)
        self._results["out_mask"] = _save(mask, affine, header, "mask.nii.gz")
        probsegs = []
        if self.inputs.write_probseg:
            for label, prob in zip(card.labels.labels,
                                   restore_probabilities(probs, grid, shape, affine),
                                   strict=True):
                probsegs.append(_save(prob.astype(np.float32), affine, header,
                                      f"probseg_{label.index}.nii.gz"))
        self._results["out_probseg"] = probsegs
        return runtime


def _label_header(native: nib.Nifti1Image) -> nib.Nifti1Header:
    """The native header's geometry (qform/sform codes) without its intensity scaling."""
    header = native.header.copy()
    header.set_slope_inter(None, None)
    return header


def _save(data: np.ndarray, affine: np.ndarray, header, name: str) -> str:
    img = nib.Nifti1Image(data, affine, header)
    img.set_data_dtype(data.dtype)
    out = os.path.abspath(name)
    nib.save(img, out)
    return out


class _MeasureInputSpec(BaseInterfaceInputSpec):
    in_dseg = File(exists=True, mandatory=True)
    model_card = File(exists=True, mandatory=True)


class _MeasureOutputSpec(TraitedSpec):
    out_tsv = File(exists=True, desc="index, name, voxels, volume_mm3 per label")


class Measure(SimpleInterface):
    """Voxel counts times native voxel volume, one row per label of the model's set."""

    input_spec = _MeasureInputSpec
    output_spec = _MeasureOutputSpec

    def _run_interface(self, runtime):
        card = card_of(self.inputs.model_card)
        img = nib.load(self.inputs.in_dseg)
        table = label_volumes(np.asanyarray(img.dataobj), img.affine, card.labels)
        out = os.path.abspath("volumes.tsv")
        table.to_csv(out, sep="\t", index=False)
        self._results["out_tsv"] = out
        return runtime


class _QCInputSpec(BaseInterfaceInputSpec):
    in_qc = File(exists=True, mandatory=True, desc="the segment step's QC arrays")
    in_probs = File(exists=True, mandatory=True, desc="gives the model-grid argmax")
    dseg = File(exists=True, mandatory=True, desc="label map on the native grid")
    volumes = File(exists=True, mandatory=True)
    model_card = File(exists=True, mandatory=True)
    age_months = traits.Either(None, traits.Float(), desc="postnatal age; None: unknown")


class _QCOutputSpec(TraitedSpec):
    out_tsv = File(exists=True, desc="one row per label: volume and QC metrics")
    out_json = File(exists=True, desc="scan-level QC numbers and flags, column descriptions")


class QualityControl(SimpleInterface):
    """Age-appropriate volume checks (brain and structures), structures out of place,
    agreement between views, pieces, MC uncertainty."""

    input_spec = _QCInputSpec
    output_spec = _QCOutputSpec

    def _run_interface(self, runtime):
        card = card_of(self.inputs.model_card)
        age_weeks = weeks_of(self.inputs.age_months)
        arrays = np.load(self.inputs.in_qc)
        views = {str(v): arrays["view_labels"][i] for i, v in enumerate(arrays["views"])}
        dseg = nib.load(self.inputs.dseg)
        label_map = np.asanyarray(dseg.dataobj)
        uncertain, samples = None, 0
        if "entropy" in arrays:
            grid_classes = np.load(self.inputs.in_probs, mmap_mode="r").argmax(axis=0)
            uncertain = qc.uncertainty(arrays["entropy"].astype(np.float32), grid_classes,
                                       arrays["sample_counts"], card.labels)
            samples = int(arrays["sample_counts"].shape[0])
        agreement, pairs = qc.view_agreement(views, card.labels)
        boxes = qc.label_boxes(label_map)
        table = qc.label_table(pd.read_csv(self.inputs.volumes, sep="\t"), card.labels,
                               agreement=agreement,
                               pieces=qc.components(label_map, card.labels, boxes),
                               uncertain=uncertain)
        summary = qc.summary(table, card.labels, age_weeks=age_weeks,
                             view_pairs=pairs, mc_samples=samples,
                             misplaced_ml=qc.misplaced(label_map, dseg.affine, card.labels,
                                                       boxes))
        self._results["out_tsv"] = os.path.abspath("qc.tsv")
        table.to_csv(self._results["out_tsv"], sep="\t", index=False, na_rep="n/a")
        self._results["out_json"] = os.path.abspath("qc.json")
        Path(self._results["out_json"]).write_text(json.dumps(qc_sidecar(summary), indent=2))
        return runtime


class _ReportInputSpec(BaseInterfaceInputSpec):
    t2w = File(exists=True, mandatory=True, desc="the segmented image, under the contours")
    age_months = traits.Either(None, traits.Float(), desc="postnatal age; None: unknown")
    scan_info = traits.Dict(traits.Str(), traits.Str(),
                            desc="the summary's lines about the scan (participant, session, "
                                 "age and its source...); default: the file name and age")
    dseg = File(exists=True, mandatory=True)
    volumes = File(exists=True, mandatory=True)
    qc_tsv = File(exists=True, mandatory=True)
    qc_json = File(exists=True, mandatory=True)
    model_card = File(exists=True, mandatory=True)
    model_sha256 = traits.Str(mandatory=True)
    pose = File(exists=True, desc="pose-normalisation result")


class _ReportOutputSpec(TraitedSpec):
    out_html = File(exists=True, desc="self-contained HTML report of the scan")


class ScanReport(SimpleInterface):
    """The scan's HTML report: contours in three views, volumes, QC, provenance."""

    input_spec = _ReportInputSpec
    output_spec = _ReportOutputSpec

    def _run_interface(self, runtime):
        from bids_infantseg import __version__

        card = card_of(self.inputs.model_card)
        t2w = Path(self.inputs.t2w)
        summary = json.loads(Path(self.inputs.qc_json).read_text())["QC"]
        info = (dict(self.inputs.scan_info) if isdefined(self.inputs.scan_info)
                else {"source image": t2w.name})
        weeks = weeks_of(self.inputs.age_months)
        info.setdefault("age used", "unknown" if weeks is None else
                        f"{weeks:.1f} weeks ({weeks / WEEKS_PER_MONTH:.1f} months)")
        provenance = {"software": f"bids_infantseg {__version__}",
                      "model": f"{card.name} {card.version}",
                      "model description": card.description or "n/a",
                      "model weights sha256": self.inputs.model_sha256,
                      "label set": card.labels.name, "model voxel size":
                      f"{card.voxel_size_mm} mm", "views": ", ".join(card.views)}
        if card.derived:
            provenance["network"] = (f"{card.derived.network.name} "
                                     f"{card.derived.network.version}, its probabilities "
                                     f"summed through {card.derived.mapping.name}")
        if isdefined(self.inputs.pose):
            pose = json.loads(Path(self.inputs.pose).read_text())
            provenance["pose normalisation"] = pose.get("message", "done")
        text = scan_report(
            title=f"bids_infantseg: {image_stem(t2w.name)}", t2w=load_t2w(t2w),
            dseg=nib.load(self.inputs.dseg), labels=card.labels,
            volumes=pd.read_csv(self.inputs.volumes, sep="\t"),
            qc_table=pd.read_csv(self.inputs.qc_tsv, sep="\t", na_values="n/a"),
            qc_summary=summary, scan=info, provenance=provenance)
        self._results["out_html"] = os.path.abspath("report.html")
        Path(self._results["out_html"]).write_text(text, encoding="utf-8")
        return runtime


def weeks_of(age_months: float | None) -> float | None:
    """Weeks from a node's ``age_months`` input (None or undefined: unknown), rounded to
    1e-9 so that an age read in weeks comes back as it was (12, not 11.999999999999998)."""
    if not isdefined(age_months) or age_months is None:
        return None
    return round(age_months * WEEKS_PER_MONTH, 9)


def image_stem(filename: str) -> str:
    """A report's name for an image: its file name without extension or ``_T2w`` suffix
    (``sub-01_ses-02_T2w.nii.gz`` -> ``sub-01_ses-02``, the scan's source entities)."""
    return filename.removesuffix(".gz").removesuffix(".nii").removesuffix("_T2w")
