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
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from bids_infantseg.conform import Grid, conform, intensity_center, restore_labels, \
    restore_probabilities
from bids_infantseg.images import load_t2w
from bids_infantseg.model.card import read_card
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
        data = np.asanyarray(img.dataobj, dtype=np.float32)
        rotation = None
        if isdefined(self.inputs.transform):
            pose = json.loads(Path(self.inputs.transform).read_text())
            rotation = np.array(pose["transform"]) if pose["accepted"] else None
        volume, grid = conform(data, img.affine, card.voxel_size_mm, card.grid_shape,
                               intensity=card.intensity,
                               center_world=intensity_center(data, img.affine),
                               rotation=rotation)
        out = os.path.abspath("conformed.nii.gz")
        nib.save(nib.Nifti1Image(volume, grid.affine), out)
        self._results["out_file"] = out
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


class _SegmentOutputSpec(TraitedSpec):
    out_probs = File(exists=True, desc="class probabilities (C, X, Y, Z), float16 .npy")


class Segment(SimpleInterface):
    """QuickNAT on every view's slices; softmax averaged across views."""

    input_spec = _SegmentInputSpec
    output_spec = _SegmentOutputSpec

    def _run_interface(self, runtime):
        import torch

        from bids_infantseg.inference import predict
        from bids_infantseg.model.card import load_model

        torch.set_num_threads(self.inputs.num_threads)
        model = load_model(Path(self.inputs.model_card).parent, device=self.inputs.device)
        if model.sha256 != self.inputs.model_sha256:
            raise RuntimeError(f"{model.path}: weights changed while running "
                               f"(sha256 {model.sha256[:12]} != {self.inputs.model_sha256[:12]})")
        volume = np.asanyarray(nib.load(self.inputs.in_file).dataobj, dtype=np.float32)
        probs = predict(model, volume, device=self.inputs.device,
                        batch_size=self.inputs.batch_size)
        out = os.path.abspath("probabilities.npy")
        np.save(out, probs.astype(np.float16))
        self._results["out_probs"] = out
        return runtime


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
