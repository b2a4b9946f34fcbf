"""Nipype interfaces that write BIDS-Derivatives: one writer per kind of output, each
file atomically, under the names the participant level checks on disk."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import pandas as pd
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from bids_infantseg.core.ages import Age
from bids_infantseg.interfaces.segmentation import card_of, weeks_of
from bids_infantseg.io.derivatives import (
    atomic_save_nifti,
    atomic_write_json,
    atomic_write_text,
    atomic_write_tsv,
    dseg_sidecar,
    mask_sidecar,
    probseg_sidecar,
    volumes_sidecar,
)
from bids_infantseg.io.discovery import Scan
from bids_infantseg.io.naming import parse_entities
from bids_infantseg.io.scan_outputs import ScanOutputs, scan_outputs, sidecar
from bids_infantseg.model.card import ModelCard

LOGGER = logging.getLogger("bids_infantseg")


class _DerivativeInputSpec(BaseInterfaceInputSpec):
    source_file = File(exists=True, mandatory=True,
                       desc="the T2w image the output derives from; its entities name it")
    bids_root = Directory(exists=True, mandatory=True,
                          desc="the BIDS dataset holding source_file (sidecars cite it)")
    output_dir = traits.Str(mandatory=True, desc="the BIDS-Derivatives folder")
    model_card = File(exists=True, mandatory=True, desc="gives the label set's name")


class _DerivativeOutputSpec(TraitedSpec):
    out_files = traits.List(traits.Str, desc="files written in the output dataset")


class DerivativeWriter(SimpleInterface):
    """Base of the writers: one kind of output under its BIDS name, each file atomically.

    Names come from :func:`~bids_infantseg.io.scan_outputs.scan_outputs`, the same the run's
    final count checks on disk, so a scan counts as done only when what it wrote is there.
    """

    output_spec = _DerivativeOutputSpec

    def _run_interface(self, runtime):
        source = Path(self.inputs.source_file)
        scan = Scan(source, Path(self.inputs.bids_root), parse_entities(source.name))
        card = card_of(self.inputs.model_card)
        paths = scan_outputs(scan, Path(self.inputs.output_dir), card.labels,
                             write_probseg=True)
        self._results["out_files"] = [str(p) for p in self._write(scan, card, paths)]
        return runtime

    def _write(self, scan: Scan, card: ModelCard, paths: ScanOutputs) -> list[Path]:
        raise NotImplementedError

    def _model(self, card: ModelCard) -> dict:
        """The model as sidecars record it (a derived model: with its network and mapping)."""
        return {"model_name": card.name, "model_version": card.version,
                "model_sha256": self.inputs.model_sha256,
                "model_derived": card.derived.record() if card.derived else None}


class _VolumesInputSpec(_DerivativeInputSpec):
    in_file = File(exists=True, mandatory=True, desc="the measure step's volume table")


class WriteVolumes(DerivativeWriter):
    """The volume table with the scan's participant, session and other entities in front."""

    input_spec = _VolumesInputSpec

    def _write(self, scan: Scan, card: ModelCard, paths: ScanOutputs) -> list[Path]:
        table = pd.read_csv(self.inputs.in_file, sep="\t")
        ids = {"participant_id": f"sub-{scan.subject}",
               "session_id": f"ses-{scan.session}" if scan.session else None}
        extra = {k: v for k, v in scan.entities.items() if k not in ("subject", "session")}
        table = pd.concat([pd.DataFrame([{**ids, **extra}] * len(table)), table], axis=1)
        return [atomic_write_tsv(paths.volumes, table),
                atomic_write_json(sidecar(paths.volumes),
                                  volumes_sidecar(labels=card.labels.name,
                                                  entity_columns=list(extra)))]


class _QCWriteInputSpec(_DerivativeInputSpec):
    in_tsv = File(exists=True, mandatory=True, desc="per-label QC table")
    in_json = File(exists=True, mandatory=True, desc="scan-level QC (the table's sidecar)")


class WriteQC(DerivativeWriter):
    """The QC table and its sidecar (scan-level numbers and flags)."""

    input_spec = _QCWriteInputSpec

    def _write(self, scan: Scan, card: ModelCard, paths: ScanOutputs) -> list[Path]:
        return [atomic_write_tsv(paths.qc, pd.read_csv(self.inputs.in_tsv, sep="\t")),
                atomic_write_text(sidecar(paths.qc), Path(self.inputs.in_json).read_text())]


class _ReportWriteInputSpec(_DerivativeInputSpec):
    in_file = File(exists=True, mandatory=True, desc="HTML report")


class WriteReport(DerivativeWriter):
    """The scan's HTML report, where the participant's reports go."""

    input_spec = _ReportWriteInputSpec

    def _write(self, scan: Scan, card: ModelCard, paths: ScanOutputs) -> list[Path]:
        return [atomic_write_text(paths.report, Path(self.inputs.in_file).read_text())]


class _ProbsegWriteInputSpec(_DerivativeInputSpec):
    in_files = InputMultiObject(File(exists=True), mandatory=True,
                                desc="one probability map per label, in the label set's order")
    model_sha256 = traits.Str(mandatory=True)


class WriteProbseg(DerivativeWriter):
    """One probability map per label, each with its sidecar."""

    input_spec = _ProbsegWriteInputSpec

    def _write(self, scan: Scan, card: ModelCard, paths: ScanOutputs) -> list[Path]:
        written = []
        for label, path, out in zip(card.labels.labels, self.inputs.in_files, paths.probseg,
                                    strict=False):
            written.append(atomic_save_nifti(nib.load(path), out))
            written.append(atomic_write_json(sidecar(out), probseg_sidecar(
                source=scan.rel_path, label=label.name, **self._model(card))))
        return written


class _MaskWriteInputSpec(_DerivativeInputSpec):
    in_file = File(exists=True, mandatory=True, desc="brain mask on the native grid")


class WriteMask(DerivativeWriter):
    """The brain mask and its sidecar (which cites the label map it comes from)."""

    input_spec = _MaskWriteInputSpec

    def _write(self, scan: Scan, card: ModelCard, paths: ScanOutputs) -> list[Path]:
        dseg = paths.dseg.relative_to(self.inputs.output_dir).as_posix()
        return [atomic_save_nifti(nib.load(self.inputs.in_file), paths.mask),
                atomic_write_json(sidecar(paths.mask),
                                  mask_sidecar(source=scan.rel_path, dseg=dseg))]


class _DsegWriteInputSpec(_DerivativeInputSpec):
    in_file = File(exists=True, mandatory=True, desc="label map on the native grid")
    model_sha256 = traits.Str(mandatory=True)
    age_months = traits.Either(None, traits.Float(), desc="postnatal age used; None: unknown")
    age_source = traits.Either(None, traits.Str(), desc="where the age was read")
    pose = File(exists=True, desc="pose-normalisation result, recorded in the sidecar")
    inference_options = traits.List(traits.Str, desc="inference-side options that were on, "
                                    "recorded in the sidecar")
    after = InputMultiObject(traits.Str, desc="files the other writers wrote: connected so "
                                              "that the label map is written last")


class WriteDseg(DerivativeWriter):
    """The label map's sidecar, then the label map: its presence means the scan is complete."""

    input_spec = _DsegWriteInputSpec

    def _write(self, scan: Scan, card: ModelCard, paths: ScanOutputs) -> list[Path]:
        weeks = weeks_of(self.inputs.age_months)
        source = self.inputs.age_source if isdefined(self.inputs.age_source) else None
        age = None if weeks is None else Age(weeks, source or "given to the workflow")
        meta = dseg_sidecar(source=scan.rel_path, labels=card.labels.name, age=age,
                            **self._model(card))
        if isdefined(self.inputs.pose):
            meta["PoseNormalization"] = json.loads(Path(self.inputs.pose).read_text())
        if isdefined(self.inputs.inference_options):
            meta["InferenceOptions"] = list(self.inputs.inference_options)
        written = [atomic_write_json(sidecar(paths.dseg), meta),
                   atomic_save_nifti(nib.load(self.inputs.in_file), paths.dseg)]
        LOGGER.info("%s: outputs written to %s", scan.source_stem, paths.dseg.parent)
        return written
