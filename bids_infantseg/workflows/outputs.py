"""Writers of BIDS-Derivatives as embeddable workflows: one ``init_ds_*_wf`` per output.

Each takes the T2w it derives from (``inputnode.source_file``, a file inside ``bids_root``)
and the outputs of :func:`~bids_infantseg.workflows.infantseg.init_infantseg_wf`, and
writes them into ``output_dir`` under BIDS names, every file atomically
(``io/derivatives.py``, names from ``io/scan_outputs.py``: the names the participant level
checks on disk). The writers always run (cheap), so outputs deleted since a cached run are
written again.
:func:`init_infantseg_derivatives_wf` connects them all and writes the label map last.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.interfaces.base import SimpleInterface
from nipype.pipeline import engine as pe

from bids_infantseg.interfaces.writers import (
    WriteDseg,
    WriteMask,
    WriteProbseg,
    WriteQC,
    WriteReport,
    WriteVolumes,
)
from bids_infantseg.model.card import CARD_FILE, Model

DERIVATIVE_FIELDS = ("dseg", "mask", "probseg", "volumes", "qc_tsv", "qc_json", "report",
                     "pose")
"""What :func:`init_infantseg_derivatives_wf` writes: ``init_infantseg_wf``'s outputnode."""


def _where(bids_root: Path, output_dir: Path, model: Model) -> dict[str, str]:
    """The inputs every writer shares."""
    return {"bids_root": str(bids_root), "output_dir": str(output_dir),
            "model_card": str(model.path / CARD_FILE)}


def _ds_wf(name: str, writer: SimpleInterface, fields: Mapping[str, str]) -> pe.Workflow:
    """inputnode (``source_file`` and ``fields``) -> writer -> outputnode (``out_files``).

    The writer runs in the process that runs the workflow (no cluster job for a copy) and
    every time (``overwrite``), so deleted outputs come back on a resumed run.
    """
    wf = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["source_file", *fields]),
                        name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["out_files"]), name="outputnode")
    ds = pe.Node(writer, name=name.removesuffix("_wf"), run_without_submitting=True,
                 overwrite=True)
    wf.connect([
        (inputnode, ds, [("source_file", "source_file"), *fields.items()]),
        (ds, outputnode, [("out_files", "out_files")]),
    ])
    return wf


def init_ds_dseg_wf(*, bids_root: Path, output_dir: Path, model: Model,
                    inference_options: Sequence[str] = (),
                    name: str = "ds_dseg_wf") -> pe.Workflow:
    """The label map and its sidecar (model, age, pose, inference options).

    inputnode: ``source_file``, ``dseg``, ``age_months`` and ``age_source`` (recorded),
    ``pose`` (optional), ``after`` (files that must be written first: connect the other
    writers' ``out_files`` so the label map, written last, marks a complete scan).
    """
    writer = WriteDseg(**_where(bids_root, output_dir, model), model_sha256=model.sha256,
                       inference_options=list(inference_options))
    return _ds_wf(name, writer, {"dseg": "in_file", "age_months": "age_months",
                                 "age_source": "age_source", "pose": "pose",
                                 "after": "after"})


def init_ds_mask_wf(*, bids_root: Path, output_dir: Path, model: Model,
                    name: str = "ds_mask_wf") -> pe.Workflow:
    """The brain mask and its sidecar. inputnode: ``source_file``, ``mask``."""
    return _ds_wf(name, WriteMask(**_where(bids_root, output_dir, model)), {"mask": "in_file"})


def init_ds_probseg_wf(*, bids_root: Path, output_dir: Path, model: Model,
                       name: str = "ds_probseg_wf") -> pe.Workflow:
    """One probability map per label with its sidecar. inputnode: ``source_file``,
    ``probseg`` (the maps in the label set's order)."""
    writer = WriteProbseg(**_where(bids_root, output_dir, model), model_sha256=model.sha256)
    return _ds_wf(name, writer, {"probseg": "in_files"})


def init_ds_volumes_wf(*, bids_root: Path, output_dir: Path, model: Model,
                       name: str = "ds_volumes_wf") -> pe.Workflow:
    """The volume table (with the source's entities as columns) and its sidecar.
    inputnode: ``source_file``, ``volumes``."""
    return _ds_wf(name, WriteVolumes(**_where(bids_root, output_dir, model)),
                  {"volumes": "in_file"})


def init_ds_qc_wf(*, bids_root: Path, output_dir: Path, model: Model,
                  name: str = "ds_qc_wf") -> pe.Workflow:
    """The QC table and its sidecar. inputnode: ``source_file``, ``qc_tsv``, ``qc_json``."""
    return _ds_wf(name, WriteQC(**_where(bids_root, output_dir, model)),
                  {"qc_tsv": "in_tsv", "qc_json": "in_json"})


def init_ds_report_wf(*, bids_root: Path, output_dir: Path, model: Model,
                      name: str = "ds_report_wf") -> pe.Workflow:
    """The HTML report. inputnode: ``source_file``, ``report``."""
    return _ds_wf(name, WriteReport(**_where(bids_root, output_dir, model)),
                  {"report": "in_file"})


def _when_complete(source_file, outputs):
    """The source file, handed on once every output exists (so a failed scan writes none)."""
    return source_file


def init_infantseg_derivatives_wf(*, bids_root: Path, output_dir: Path, model: Model,
                                  probseg: bool = False, inference_options: Sequence[str] = (),
                                  name: str = "ds_infantseg_wf") -> pe.Workflow:
    """Every output of :func:`~bids_infantseg.workflows.infantseg.init_infantseg_wf`, the
    label map last.

    inputnode: ``source_file``, ``age_months``, ``age_source`` and the fields of
    :data:`DERIVATIVE_FIELDS` (connect ``init_infantseg_wf``'s outputnode field by field);
    outputnode: ``out_files``, every file written. ``probseg``: also write the probability
    maps (``init_infantseg_wf(probseg=True)`` makes them). No writer starts before every
    output exists, so a scan whose segmentation failed leaves no partial outputs.
    """
    wf = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(
        fields=["source_file", "age_months", "age_source", *DERIVATIVE_FIELDS]),
        name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["out_files"]), name="outputnode")
    where = {"bids_root": bids_root, "output_dir": output_dir, "model": model}
    firsts = [
        (init_ds_volumes_wf(**where), ["volumes"]),
        (init_ds_qc_wf(**where), ["qc_tsv", "qc_json"]),
        (init_ds_report_wf(**where), ["report"]),
        (init_ds_mask_wf(**where), ["mask"]),
    ]
    if probseg:
        firsts.append((init_ds_probseg_wf(**where), ["probseg"]))
    ds_dseg = init_ds_dseg_wf(**where, inference_options=inference_options)
    required = ["dseg", *(field for _, fields in firsts for field in fields)]
    outputs = pe.Node(niu.Merge(len(required), ravel_inputs=True), name="outputs",
                      run_without_submitting=True)
    complete = pe.Node(niu.Function(function=_when_complete, output_names=["source_file"]),
                       name="when_complete", run_without_submitting=True)
    wf.connect([
        (inputnode, outputs, [(field, f"in{i}") for i, field in enumerate(required, start=1)]),
        (inputnode, complete, [("source_file", "source_file")]),
        (outputs, complete, [("out", "outputs")]),
    ])
    written = pe.Node(niu.Merge(len(firsts), ravel_inputs=True), name="written_first",
                      run_without_submitting=True)
    everything = pe.Node(niu.Merge(2, ravel_inputs=True), name="written",
                         run_without_submitting=True)
    for i, (ds, fields) in enumerate(firsts, start=1):
        wf.connect([
            (complete, ds, [("source_file", "inputnode.source_file")]),
            (inputnode, ds, [(f, f"inputnode.{f}") for f in fields]),
            (ds, written, [("outputnode.out_files", f"in{i}")]),
        ])
    wf.connect([
        (complete, ds_dseg, [("source_file", "inputnode.source_file")]),
        (inputnode, ds_dseg, [(f, f"inputnode.{f}") for f in
                              ("dseg", "age_months", "age_source", "pose")]),
        (written, ds_dseg, [("out", "inputnode.after")]),
        (written, everything, [("out", "in1")]),
        (ds_dseg, everything, [("outputnode.out_files", "in2")]),
        (everything, outputnode, [("out", "out_files")]),
    ])
    return wf
