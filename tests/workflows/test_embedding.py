"""init_infantseg_wf inside another pipeline's workflow: the parent feeds its inputnode from
its own node and reads its outputnode into its own node (docs/embedding.md's example, run as
the document shows it), on a small synthetic head with the tiny test model."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from bids_infantseg.core.ages import WEEKS_PER_MONTH
from bids_infantseg.io.discovery import Scan
from bids_infantseg.io.naming import parse_entities
from bids_infantseg.io.scan_outputs import output_problems, scan_outputs, sidecar
from bids_infantseg.model.card import load_model
from bids_infantseg.workflows.infantseg import init_infantseg_wf
from tests.bids_factory import write_description
from tests.conftest import t2w_path, write_head

EMBEDDING_DOC = Path(__file__).parents[2] / "docs" / "embedding.md"


def _results(graph) -> dict[str, object]:
    """Each executed node's outputs by node name (what ``Workflow.run`` returns)."""
    return {node.name: node.result.outputs for node in graph.nodes}


def test_the_documented_pipeline_embeds_infantseg_wf(tmp_path, tiny_model_dir):
    code = re.search(r"```python\n(.*?)```", EMBEDDING_DOC.read_text(), re.S).group(1)
    script = tmp_path / "my_pipeline.py"  # a file, so Nipype's Function nodes read the source
    script.write_text(code)
    example = runpy.run_path(str(script), run_name="example")

    bids, out = tmp_path / "bids", tmp_path / "out"
    write_description(bids)
    t2w = write_head(t2w_path(bids, "01", "1"), seed=5)
    wf = example["build_pipeline"](bids, "01", out, tmp_path / "work", model=tiny_model_dir)
    brain_ml = _results(wf.run())["brain_ml"].brain_ml

    model = load_model(tiny_model_dir)
    labels = model.card.labels
    outputs = scan_outputs(Scan(t2w, bids, parse_entities(t2w.name)), out, labels,
                           write_probseg=False)
    assert output_problems(outputs) == {}
    assert outputs.dseg.name == "sub-01_ses-1_space-T2w_desc-drawem9_dseg.nii.gz"
    source, dseg = nib.load(t2w), nib.load(outputs.dseg)
    assert dseg.shape == source.shape
    np.testing.assert_allclose(dseg.affine, source.affine, atol=1e-6)
    label_map = np.asanyarray(dseg.dataobj)
    assert set(np.unique(label_map)) <= set(labels.indices)
    mask = np.asanyarray(nib.load(outputs.mask).dataobj)
    np.testing.assert_array_equal(mask > 0, np.isin(label_map, labels.brain_indices))

    volumes = pd.read_csv(outputs.volumes, sep="\t")
    assert volumes["voxels"].sum() == label_map.size
    assert set(volumes["participant_id"]) == {"sub-01"}
    brain = volumes[volumes["index"].isin(labels.brain_indices)]
    assert brain_ml == pytest.approx(brain["volume_mm3"].sum() / 1000)  # the parent's node
    assert brain_ml > 0

    meta = json.loads(sidecar(outputs.dseg).read_text())
    assert meta["Age"] == {"Weeks": round(3.0 * WEEKS_PER_MONTH, 3),
                           "Source": "given to the workflow"}
    assert meta["SpatialReference"] == "bids:raw:sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz"
    assert "flags" in json.loads(sidecar(outputs.qc).read_text())["QC"]
    assert "<title>bids_infantseg: sub-01_ses-1</title>" in outputs.report.read_text()


def _as_is(t2w):
    """The parent's own step: hands the image on, with no age."""
    return t2w, None


def _summary(dseg, probseg, qc_json, report):
    """The parent's own step reading the outputnode."""
    import json

    import nibabel as nib
    import numpy as np

    total = sum(np.asanyarray(nib.load(p).dataobj) for p in probseg)
    return {"probseg": len(probseg), "dseg_shape": nib.load(dseg).shape,
            "max_sum_error": float(np.abs(total[total > 0] - 1).max()),
            "flags": json.loads(open(qc_json).read())["QC"]["flags"],
            "report": open(report).read()}


def test_infantseg_wf_needs_no_bids_and_no_age(tmp_path, tiny_model_dir):
    """An image outside any BIDS dataset and an unknown age: probabilities and QC still come,
    and QC says the age-dependent checks were skipped."""
    t2w = write_head(tmp_path / "images" / "baby.nii.gz", seed=2)
    parent = pe.Workflow(name="parent", base_dir=str(tmp_path / "work"))
    pick = pe.Node(niu.Function(function=_as_is, output_names=["t2w", "age_months"]),
                   name="pick")
    pick.inputs.t2w = str(t2w)
    segment = init_infantseg_wf(model=load_model(tiny_model_dir), probseg=True,
                                refine_em=False, name="segment_wf")
    summary = pe.Node(niu.Function(function=_summary, output_names=["summary"]),
                      name="summary")
    parent.connect([
        (pick, segment, [("t2w", "inputnode.t2w"), ("age_months", "inputnode.age_months")]),
        (segment, summary, [("outputnode.dseg", "dseg"), ("outputnode.probseg", "probseg"),
                            ("outputnode.qc_json", "qc_json"),
                            ("outputnode.report", "report")]),
    ])
    result = _results(parent.run())["summary"].summary
    assert result["probseg"] == 10
    assert tuple(result["dseg_shape"]) == nib.load(t2w).shape
    assert result["max_sum_error"] < 1e-3
    assert result["flags"]["age"].startswith("no age: volumes checked against the whole first")
    assert "<title>bids_infantseg: baby</title>" in result["report"]
    assert "unknown" in result["report"] and "baby.nii.gz" in result["report"]
