"""NiBabies accepts our outputs (issue 14): its own collection finds our aseg and brain mask.

NiBabies (fMRIPrep for infants) takes precomputed anatomical derivatives through
``--derivatives DIR``. Per subject and session it looks them up with
``nibabies.utils.derivatives.collect_anatomical_derivatives``, whose queries
(``nibabies/data/io_spec_anat.json``) want, in ``sub-<p>/[ses-<s>/]anat/``:

- ``t2w_mask``: ``space-T2w``, ``desc-brain``, suffix ``mask``;
- ``t2w_aseg``: ``space-T2w``, ``desc-aseg``, suffix ``dseg``, FreeSurfer aseg codes;

(``.nii.gz`` or ``.nii``; no sidecar needed, nor a valid dataset_description.json, as it
indexes the folder with ``validate=False``). docs/nibabies.md says what it does with them.

The fast test checks our names against those queries as recorded from NiBabies 25.2.1. The
slow one installs NiBabies from PyPI into its own virtualenv, segments a small generated
dataset (two participants, one with two sessions) with a tiny untrained aseg model, and runs
NiBabies' own session listing and collection on the output folder, in that virtualenv. Set
``BIDS_INFANTSEG_NIBABIES_PYTHON`` to the python of a virtualenv with NiBabies to skip the
install, ``BIDS_INFANTSEG_NIBABIES`` to another pip requirement than the checked version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from bids_infantseg.io.naming import parse_entities
from bids_infantseg.io.scan_outputs import scan_outputs
from bids_infantseg.model.card import save_model
from bids_infantseg.model.labels import ASEG
from bids_infantseg.model.quicknat import QuickNAT, QuickNATConfig
from tests.bids_factory import write_description, write_scan, write_tsv
from tests.conftest import t2w_path, write_head
from tests.model_factory import tiny_card

NIBABIES_CHECKED = "25.2.1"
"""The NiBabies release whose collection docs/nibabies.md and this test describe."""

NIBABIES_QUERIES = {
    "t2w_mask": {"datatype": "anat", "space": "T2w", "desc": "brain", "suffix": "mask",
                 "extension": [".nii.gz", ".nii"]},
    "t2w_aseg": {"datatype": "anat", "space": "T2w", "desc": "aseg", "suffix": "dseg",
                 "extension": [".nii.gz", ".nii"]},
}
"""NiBabies 25.2.1's queries for what we write (``io_spec_anat.json``, ``baseline``)."""

# Runs in NiBabies' virtualenv: its own session listing on the raw dataset (one workflow per
# subject and session, as its CLI makes them), then its collection on our output folder.
COLLECT = """
import json, sys
from importlib.metadata import version
from bids.layout import BIDSLayout
from nibabies.cli.parser import compute_subworkflows
from nibabies.data import load
from nibabies.utils.derivatives import collect_anatomical_derivatives
from smriprep.workflows.anatomical import _aseg_to_three

bids_dir, derivatives_dir = sys.argv[1:3]
layout = BIDSLayout(bids_dir, validate=False)
pairs = compute_subworkflows(layout=layout, participant_ids=layout.get_subjects())
spec = json.loads(load("io_spec_anat.json").read_text())["queries"]["baseline"]
lut = load("FreeSurferSubcorticalLabelTableLut.txt").read_text().split()
print(json.dumps({
    "nibabies": version("nibabies"),
    "queries": {key: spec[key] for key in ("t2w_mask", "t2w_aseg")},
    "collected": [
        {"subject": sub, "session": ses,
         "derivatives": collect_anatomical_derivatives(
             derivatives_dir=derivatives_dir, subject_id=sub, session_id=ses,
             std_spaces=["MNIInfant:cohort-1", "fsnative"])}
        for sub, ses in pairs],
    "aseg_to_tissue": [int(t) for t in _aseg_to_three()],
    "cifti_subcortical": [int(w) for w in lut[1::6]],
}))
"""


def test_our_mask_and_aseg_names_answer_nibabies_queries(tmp_path):
    bids = tmp_path / "bids"
    for entities in ({"subject": "01", "session": "01"}, {"subject": "01", "session": "02"},
                     {"subject": "02", "acquisition": "fast", "run": "1"}):
        scan = write_scan(bids, **entities)
        outputs = scan_outputs(scan, tmp_path / "out", ASEG, write_probseg=False)
        for key, path in (("t2w_mask", outputs.mask), ("t2w_aseg", outputs.dseg)):
            query = NIBABIES_QUERIES[key]
            entities_found = parse_entities(path.name)
            assert path.parent.name == query["datatype"]
            assert {k: entities_found.get(k) for k in ("space", "desc")} == \
                {"space": query["space"], "desc": query["desc"]}
            assert path.name.split(".", 1)[0].rsplit("_", 1)[1] == query["suffix"]
            assert path.name.endswith(tuple(query["extension"]))
            assert {k: entities_found.get(k) for k in ("subject", "session")} == \
                {k: entities.get(k) for k in ("subject", "session")}


def _tiny_aseg_model(folder: Path) -> Path:
    """An untrained tiny QuickNAT with the aseg label set: the test is about file names."""
    card = replace(tiny_card(), name="tiny-aseg", labels=ASEG,
                   architecture=QuickNATConfig(num_classes=len(ASEG), num_filters=4,
                                               dropout=0.0))
    torch.manual_seed(0)
    return save_model(folder, card, {view: QuickNAT(card.architecture).eval()
                                     for view in card.views})


def _two_participants(root: Path) -> Path:
    """sub-01 with two sessions (2 and 26 weeks), sub-02 without sessions (3 months)."""
    write_description(root)
    write_tsv(root / "participants.tsv", [{"participant_id": "sub-01", "sex": "F"},
                                          {"participant_id": "sub-02", "sex": "M",
                                           "age_months": "3"}])
    write_tsv(root / "sub-01" / "sub-01_sessions.tsv",
              [{"session_id": "ses-01", "age_weeks": "2"},
               {"session_id": "ses-02", "age_weeks": "26"}])
    write_head(t2w_path(root, "01", "01"), seed=1)
    write_head(t2w_path(root, "01", "02"), seed=2)
    write_head(t2w_path(root, "02"), seed=3)
    return root


def _run(cmd: list[str], timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def nibabies_python(tmp_path_factory) -> str:
    """The python of a virtualenv with NiBabies from PyPI (skipped where no index answers)."""
    given = os.environ.get("BIDS_INFANTSEG_NIBABIES_PYTHON")
    if given:
        return given
    requirement = os.environ.get("BIDS_INFANTSEG_NIBABIES", f"nibabies=={NIBABIES_CHECKED}")
    root = tmp_path_factory.mktemp("nibabies")
    probe = _run([sys.executable, "-m", "pip", "download", "--no-deps", "--dest",
                  str(root / "probe"), requirement], timeout=600)
    if probe.returncode:
        last = (probe.stderr or probe.stdout).strip().splitlines()[-1:]
        pytest.skip(f"pip cannot fetch {requirement} from a package index: {' '.join(last)}")
    venv = root / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], timeout=300)
    assert made.returncode == 0, made.stderr
    python = str(venv / "bin" / "python")
    install = _run([python, "-m", "pip", "install", "--quiet", requirement], timeout=1800)
    assert install.returncode == 0, f"pip install {requirement} failed:\n{install.stderr[-3000:]}"
    return python


@pytest.mark.slow
def test_nibabies_collects_our_aseg_and_mask_for_every_subject_and_session(
        tmp_path, nibabies_python):
    bids = _two_participants(tmp_path / "bids")
    out = tmp_path / "derivatives" / "bids_infantseg"
    model = _tiny_aseg_model(tmp_path / "tiny-aseg")
    seg = _run([sys.executable, "-m", "bids_infantseg", str(bids), str(out), "participant",
                "--model", str(model), "--device", "cpu", "--omp-nthreads", "1",
                "--nprocs", "1"], timeout=900)
    assert seg.returncode == 0, seg.stdout + seg.stderr

    found = _run([nibabies_python, "-c", COLLECT, str(bids), str(out)], timeout=600)
    assert found.returncode == 0, found.stderr
    report = json.loads(found.stdout)
    for item in report["collected"]:  # paths relative to our output folder, to read
        item["derivatives"] = {k: str(Path(v).relative_to(out)) if isinstance(v, str) else v
                               for k, v in item["derivatives"].items()}
    shown = {k: report[k] for k in ("nibabies", "queries", "collected")}
    print(f"\nNiBabies {report['nibabies']} collect_anatomical_derivatives on "
          f"{out.parent.name}/{out.name}:\n{json.dumps(shown, indent=1)}")

    assert report["queries"] == NIBABIES_QUERIES  # NiBabies still asks for these names
    expected = {("01", "01"): "sub-01/ses-01/anat/sub-01_ses-01",
                ("01", "02"): "sub-01/ses-02/anat/sub-01_ses-02",
                ("02", None): "sub-02/anat/sub-02"}
    assert [(c["subject"], c["session"]) for c in report["collected"]] == list(expected)
    for item in report["collected"]:
        stem = expected[item["subject"], item["session"]]
        assert item["derivatives"] == {
            "t2w_mask": f"{stem}_space-T2w_desc-brain_mask.nii.gz",
            "t2w_aseg": f"{stem}_space-T2w_desc-aseg_dseg.nii.gz",
            "transforms": {}}, item  # one file each (not a list), and nothing taken amiss

    # What NiBabies does with the aseg's codes: its tissue map (smriprep's aseg -> GM/WM/CSF
    # table) gives every brain label of ours a tissue, and the CIFTI subcortical structures
    # it cuts from the aseg are all labels of ours.
    tissue = report["aseg_to_tissue"]
    assert all(0 < index < len(tissue) and tissue[index] for index in ASEG.brain_indices)
    assert set(report["cifti_subcortical"]) <= set(ASEG.indices.tolist())
