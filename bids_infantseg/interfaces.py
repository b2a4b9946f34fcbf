"""Nipype interfaces: thin wrappers that read files, call a pure function, write files.

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

from bids_infantseg import qc
from bids_infantseg.conform import (
    Grid,
    conform,
    intensity_center,
    restore_labels,
    restore_probabilities,
)
from bids_infantseg.derivatives import (
    atomic_save_nifti,
    atomic_write_json,
    atomic_write_text,
    atomic_write_tsv,
    dseg_sidecar,
    mask_sidecar,
    probseg_sidecar,
    volumes_sidecar,
)
from bids_infantseg.discovery import Scan
from bids_infantseg.images import load_t2w
from bids_infantseg.model.card import read_card
from bids_infantseg.pose import load_transform, rigid_to_template, save_transform
from bids_infantseg.report.outputs import qc_sidecar
from bids_infantseg.report.scan import scan_report
from bids_infantseg.scan_outputs import scan_outputs, sidecar
from bids_infantseg.volumes import label_volumes

LOGGER = logging.getLogger("bids_infantseg")


def _card(card_file: str):
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
        card = _card(self.inputs.model_card)
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

    The model comes from the process's cache (:func:`~bids_infantseg.inference.shared_model`),
    so scans run in one process load, and compile, the network once.
    """

    input_spec = _SegmentInputSpec
    output_spec = _SegmentOutputSpec

    def _run_interface(self, runtime):
        import torch

        from bids_infantseg.inference import predict_with_qc, shared_model

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
    """``probs`` as a float16 ``.npy``, written a class at a time (no whole float16 copy)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=probs.shape)
    for k in range(probs.shape[0]):
        out[k] = probs[k]
    out.flush()
    del out


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
        card = _card(self.inputs.model_card)
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
        card = _card(self.inputs.model_card)
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
    scan_json = traits.Str(mandatory=True)


class _QCOutputSpec(TraitedSpec):
    out_tsv = File(exists=True, desc="one row per label: volume and QC metrics")
    out_json = File(exists=True, desc="scan-level QC numbers and flags, column descriptions")


class QualityControl(SimpleInterface):
    """Age-appropriate volume checks (brain and structures), structures out of place,
    agreement between views, pieces, MC uncertainty."""

    input_spec = _QCInputSpec
    output_spec = _QCOutputSpec

    def _run_interface(self, runtime):
        card = _card(self.inputs.model_card)
        scan = Scan.from_json(self.inputs.scan_json)
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
        summary = qc.summary(table, card.labels, age_weeks=scan.age.weeks if scan.age else None,
                             view_pairs=pairs, mc_samples=samples,
                             misplaced_ml=qc.misplaced(label_map, dseg.affine, card.labels,
                                                       boxes))
        self._results["out_tsv"] = os.path.abspath("qc.tsv")
        table.to_csv(self._results["out_tsv"], sep="\t", index=False, na_rep="n/a")
        self._results["out_json"] = os.path.abspath("qc.json")
        Path(self._results["out_json"]).write_text(json.dumps(qc_sidecar(summary), indent=2))
        return runtime


class _ReportInputSpec(BaseInterfaceInputSpec):
    scan_json = traits.Str(mandatory=True)
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

        card = _card(self.inputs.model_card)
        scan = Scan.from_json(self.inputs.scan_json)
        summary = json.loads(Path(self.inputs.qc_json).read_text())["QC"]
        age = ("unknown (no age in scans.tsv, sessions.tsv or participants.tsv)"
               if scan.age is None else
               f"{scan.age.weeks:.1f} weeks ({scan.age.months:.1f} months), "
               f"from {scan.age.source}")
        info = {"source image": scan.rel_path, "participant": f"sub-{scan.subject}",
                "session": f"ses-{scan.session}" if scan.session else "n/a",
                "age used": age, "sex": scan.sex or "n/a"}
        provenance = {"software": f"bids_infantseg {__version__}",
                      "model": f"{card.name} {card.version}",
                      "model description": card.description or "n/a",
                      "model weights sha256": self.inputs.model_sha256,
                      "label set": card.labels.name, "model voxel size":
                      f"{card.voxel_size_mm} mm", "views": ", ".join(card.views)}
        if isdefined(self.inputs.pose):
            pose = json.loads(Path(self.inputs.pose).read_text())
            provenance["pose normalisation"] = pose.get("message", "done")
        text = scan_report(
            title=f"bids_infantseg: {scan.source_stem}", t2w=load_t2w(scan.path),
            dseg=nib.load(self.inputs.dseg), labels=card.labels,
            volumes=pd.read_csv(self.inputs.volumes, sep="\t"),
            qc_table=pd.read_csv(self.inputs.qc_tsv, sep="\t", na_values="n/a"),
            qc_summary=summary, scan=info, provenance=provenance)
        self._results["out_html"] = os.path.abspath("report.html")
        Path(self._results["out_html"]).write_text(text, encoding="utf-8")
        return runtime


class _WriteInputSpec(BaseInterfaceInputSpec):
    scan_json = traits.Str(mandatory=True, desc="the Scan record (path, entities, age)")
    output_dir = traits.Str(mandatory=True)
    model_card = File(exists=True, mandatory=True)
    model_sha256 = traits.Str(mandatory=True)
    dseg = File(exists=True, mandatory=True)
    mask = File(exists=True, mandatory=True)
    volumes = File(exists=True, mandatory=True)
    probseg = InputMultiObject(File(exists=True))
    pose = File(exists=True, desc="pose-normalisation result, recorded in the dseg sidecar")
    qc_tsv = File(exists=True, desc="per-label QC table")
    qc_json = File(exists=True, desc="scan-level QC")
    report = File(exists=True, desc="HTML report")
    inference_options = traits.List(traits.Str, desc="inference-side options that were on, "
                                    "recorded in the dseg sidecar")


class _WriteOutputSpec(TraitedSpec):
    out_files = traits.List(traits.Str, desc="files written in the output dataset")


class WriteDerivatives(SimpleInterface):
    """Copy a scan's results into the output dataset under BIDS names, each file atomically.

    The label map is written last, so its presence means the scan's outputs are complete.
    """

    input_spec = _WriteInputSpec
    output_spec = _WriteOutputSpec

    def _run_interface(self, runtime):
        scan = Scan.from_json(self.inputs.scan_json)
        card = _card(self.inputs.model_card)
        labels = card.labels.name
        out_dir = Path(self.inputs.output_dir)
        paths = scan_outputs(scan, out_dir, card.labels, bool(self.inputs.probseg))
        model = {"model_name": card.name, "model_version": card.version,
                 "model_sha256": self.inputs.model_sha256}
        dseg_rel = paths.dseg.relative_to(out_dir).as_posix()
        written: list[Path] = []

        table = pd.read_csv(self.inputs.volumes, sep="\t")
        ids = {"participant_id": f"sub-{scan.subject}",
               "session_id": f"ses-{scan.session}" if scan.session else None}
        extra = {k: v for k, v in scan.entities.items() if k not in ("subject", "session")}
        table = pd.concat([pd.DataFrame([{**ids, **extra}] * len(table)), table], axis=1)
        written.append(atomic_write_tsv(paths.volumes, table))
        written.append(atomic_write_json(sidecar(paths.volumes),
                                         volumes_sidecar(labels=labels,
                                                         entity_columns=list(extra))))

        if isdefined(self.inputs.qc_tsv):
            written.append(atomic_write_tsv(paths.qc, pd.read_csv(self.inputs.qc_tsv, sep="\t")))
            written.append(atomic_write_text(sidecar(paths.qc),
                                             Path(self.inputs.qc_json).read_text()))
        if isdefined(self.inputs.report):
            written.append(atomic_write_text(paths.report, Path(self.inputs.report).read_text()))

        for label, path, out in zip(card.labels.labels, self.inputs.probseg or [],
                                    paths.probseg, strict=False):
            written.append(atomic_save_nifti(nib.load(path), out))
            written.append(atomic_write_json(sidecar(out), probseg_sidecar(
                source=scan.rel_path, label=label.name, **model)))

        written.append(atomic_save_nifti(nib.load(self.inputs.mask), paths.mask))
        written.append(atomic_write_json(sidecar(paths.mask),
                                         mask_sidecar(source=scan.rel_path, dseg=dseg_rel)))

        dseg_meta = dseg_sidecar(source=scan.rel_path, labels=labels, age=scan.age, **model)
        if isdefined(self.inputs.pose):
            dseg_meta["PoseNormalization"] = json.loads(Path(self.inputs.pose).read_text())
        if isdefined(self.inputs.inference_options):
            dseg_meta["InferenceOptions"] = list(self.inputs.inference_options)
        written.append(atomic_write_json(sidecar(paths.dseg), dseg_meta))
        written.append(atomic_save_nifti(nib.load(self.inputs.dseg), paths.dseg))
        self._results["out_files"] = [str(p) for p in written]
        LOGGER.info("%s: outputs written to %s", scan.source_stem, paths.dseg.parent)
        return runtime
