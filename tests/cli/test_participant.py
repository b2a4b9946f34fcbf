"""End to end: the participant level on small head-like datasets with a tiny model."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_infantseg.cli.main import main
from tests.bids_factory import write_tsv
from tests.conftest import t2w_path, write_head
from tests.validator import ACCEPTED_WARNINGS, validate


def run(bids: Path, out: Path, model: Path, *extra: str) -> int:
    return main([str(bids), str(out), "participant", "--model", str(model), "--nprocs", "1",
                 "--device", "cpu", *extra])


def outputs(out: Path, stem: str, anat: str) -> dict[str, Path]:
    folder = out / anat
    return {
        "dseg": folder / f"{stem}_space-T2w_desc-drawem9_dseg.nii.gz",
        "dseg_json": folder / f"{stem}_space-T2w_desc-drawem9_dseg.json",
        "mask": folder / f"{stem}_space-T2w_desc-brain_mask.nii.gz",
        "volumes": folder / f"{stem}_desc-drawem9_volumes.tsv",
        "volumes_json": folder / f"{stem}_desc-drawem9_volumes.json",
    }


SCANS = [("sub-01_ses-01", "sub-01/ses-01/anat"), ("sub-01_ses-02", "sub-01/ses-02/anat"),
         ("sub-02_run-1", "sub-02/anat"), ("sub-02_run-2", "sub-02/anat")]


def test_every_scan_gets_outputs_on_its_own_grid(finished_study):
    head_dataset, out = finished_study.bids, finished_study.together.out
    assert finished_study.together.status == 0, finished_study.together.log
    errors, warnings = validate(out)
    assert errors == [], errors
    assert warnings <= ACCEPTED_WARNINGS, warnings

    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "bids_infantseg"
    assert (out / "desc-drawem9_dseg.tsv").is_file()
    for stem, anat in SCANS:
        files = outputs(out, stem, anat)
        for path in files.values():
            assert path.is_file(), path
        source = nib.load(next((head_dataset / anat).glob(f"{stem}_T2w.nii.gz")))
        dseg = nib.load(files["dseg"])
        assert dseg.shape == source.shape
        np.testing.assert_allclose(dseg.affine, source.affine, atol=1e-6)
        labels = np.asanyarray(dseg.dataobj)
        assert set(np.unique(labels)) <= set(range(10))
        table = pd.read_csv(files["volumes"], sep="\t")
        assert table["voxels"].sum() == labels.size
        assert table["participant_id"].iloc[0] == stem.split("_")[0]
        probsegs = sorted(files["dseg"].parent.glob(f"{stem}_space-T2w_label-*_probseg.nii.gz"))
        assert len(probsegs) == 10
        total = sum(np.asanyarray(nib.load(p).dataobj) for p in probsegs)
        inside = total > 0
        np.testing.assert_allclose(total[inside], 1.0, atol=1e-3)
        sidecar = json.loads(files["dseg_json"].read_text())
        assert sidecar["Model"]["Name"] == "tiny-test"
        assert sidecar["SpatialReference"].endswith(f"{stem}_T2w.nii.gz")
    ages = [json.loads(outputs(out, s, a)["dseg_json"].read_text())["Age"] for s, a in SCANS]
    assert ages[0]["Weeks"] == pytest.approx(2) and ages[1]["Weeks"] == pytest.approx(26)
    assert ages[2]["Source"].startswith("participants.tsv")


def test_bad_images_are_reported_once_each_the_others_processed_and_exit_2(
        head_dataset, tmp_path, tiny_model_dir, caplog):
    """Truncated, 4-D, all-zero and all-NaN: before, each was named twice (when checked and
    again in a FAILED line) and the run exited 1; unusable input is exit status 2."""
    truncated = t2w_path(head_dataset, "01", "02")
    truncated.write_bytes(truncated.read_bytes()[:2000])
    img = nib.load(t2w_path(head_dataset, "02", run="1"))
    four_d = t2w_path(head_dataset, "02", run="1")
    nib.save(nib.Nifti1Image(np.zeros((*img.shape, 2), np.float32), img.affine), four_d)
    nan = t2w_path(head_dataset, "02", run="2")
    nib.save(nib.Nifti1Image(np.full(img.shape, np.nan, np.float32), img.affine), nan)
    zero = t2w_path(head_dataset, "02", run="3")
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.float32), img.affine), zero)

    out = tmp_path / "out"
    assert run(head_dataset, out, tiny_model_dir) == 2
    lines = [r.getMessage() for r in caplog.records]
    for bad, problem in ((truncated, "cannot be read"), (four_d, "4D image"),
                         (nan, "NaN"), (zero, "all zero")):
        named = [line for line in lines if str(bad) in line]
        assert len(named) == 1 and problem in named[0] and "\n" not in named[0], named
    assert "1 of 5 scan(s) segmented" in caplog.text
    assert lines[-1] == "4 unusable inputs skipped (listed above)"
    assert outputs(out, *SCANS[0])["dseg"].is_file()


def test_no_usable_input_is_exit_2_and_nothing_is_left(tmp_path, tiny_model_dir, capsys,
                                                       caplog):
    root, out = one_scan_dataset(tmp_path / "bids"), tmp_path / "out"
    t2w_path(root, "01").write_bytes(b"")
    assert run(root, out, tiny_model_dir) == 2
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        f"{t2w_path(root, '01')}: empty file"]
    assert capsys.readouterr().err == ("bids_infantseg: error: no usable input: 1 image "
                                       "cannot be segmented (listed above); nothing was run\n")
    assert not out.exists()


@pytest.mark.parametrize("output", ["new", "used"])
def test_unknown_participant_is_a_usage_error_that_leaves_nothing(
        head_dataset, tmp_path, tiny_model_dir, capsys, output):
    """Before, OUTPUT/.work/sub-99 (and a new output folder) stayed behind."""
    out = tmp_path / "out"
    if output == "used":  # a study's output folder, earlier runs' work folders in it
        (out / ".work" / "sub-01").mkdir(parents=True)
        (out / "dataset_description.json").write_text(json.dumps(
            {"Name": "x", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
             "GeneratedBy": [{"Name": "bids_infantseg"}]}))
    before = sorted(tmp_path.rglob("*"))
    assert run(head_dataset, out, tiny_model_dir, "--participant-label", "sub-99") == 2
    assert "no subject 99" in capsys.readouterr().err
    assert sorted(tmp_path.rglob("*")) == before


def test_output_inside_the_dataset_is_refused(head_dataset, tiny_model_dir, capsys):
    assert run(head_dataset, head_dataset / "sub-01" / "out", tiny_model_dir) == 2
    assert "inside the BIDS dataset" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["output", "work"])
def test_a_folder_that_cannot_be_created_is_one_line_and_exit_2(head_dataset, tmp_path,
                                                                tiny_model_dir, capsys, where):
    """Its parent is a regular file: before, a NotADirectoryError traceback and exit 1."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = blocker / "out" if where == "output" else tmp_path / "out"
    work = blocker / "work" if where == "work" else tmp_path / "work"
    assert run(head_dataset, out, tiny_model_dir, "-w", str(work)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"cannot write to the {where} folder {out if where == 'output' else work}" in err


def test_a_file_system_failing_after_the_checks_is_one_line(head_dataset, tmp_path,
                                                            tiny_model_dir, capsys,
                                                            monkeypatch):
    out = tmp_path / "out"

    def full(folder, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "x.json"))

    monkeypatch.setattr("bids_infantseg.cli.participant.write_dataset_description", full)
    assert run(head_dataset, out, tiny_model_dir) == 1
    err = capsys.readouterr().err
    assert err == f"bids_infantseg: error: [Errno 28] No space left on device: '{out}/x.json'\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_one_line_and_exit_2(head_dataset, tmp_path,
                                                          tiny_model_dir, capsys):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert run(head_dataset, out, tiny_model_dir) == 2
    finally:
        out.chmod(0o755)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write to the output folder {out}" in err, err


def test_output_of_another_tool_is_refused(head_dataset, tmp_path, tiny_model_dir, capsys):
    other = tmp_path / "fmriprep"
    other.mkdir()
    (other / "dataset_description.json").write_text(json.dumps(
        {"Name": "x", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "fMRIPrep"}]}))
    assert run(head_dataset, other, tiny_model_dir) == 2
    assert "fMRIPrep" in capsys.readouterr().err


def test_left_right_flip_in_the_header_mirrors_the_label_map(tmp_path, tiny_model_dir):
    root = tmp_path / "bids"
    from tests.bids_factory import write_description

    write_description(root)
    ras = write_head(t2w_path(root, "01", run="1"), seed=7)
    img = nib.load(ras)
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = img.shape[0] - 1
    las = nib.Nifti1Image(np.asanyarray(img.dataobj)[::-1], img.affine @ flip)
    nib.save(las, t2w_path(root, "01", run="2"))
    out = tmp_path / "out"
    assert run(root, out, tiny_model_dir) == 0
    a = np.asanyarray(nib.load(outputs(out, "sub-01_run-1", "sub-01/anat")["dseg"]).dataobj)
    b = np.asanyarray(nib.load(outputs(out, "sub-01_run-2", "sub-01/anat")["dseg"]).dataobj)
    assert (a != 0).any()
    agreement = np.mean(a == b[::-1])
    assert agreement > 0.999, agreement
    assert np.mean(a == b) < agreement  # the asymmetric head: no mirroring gives no match


def test_work_directory_cache_is_reused(head_dataset, tmp_path, tiny_model_dir):
    work = tmp_path / "work"
    out = tmp_path / "out"
    sub_02 = ("-w", str(work), "--participant-label", "02")
    assert run(head_dataset, out, tiny_model_dir, *sub_02) == 0
    results = sorted(work.rglob("segment/result_segment.pklz"))
    assert len(results) == 2
    stamps = [p.stat().st_mtime_ns for p in results]
    outputs(out, *SCANS[2])["dseg"].unlink()
    assert run(head_dataset, out, tiny_model_dir, *sub_02) == 0
    assert [p.stat().st_mtime_ns for p in results] == stamps  # nothing re-segmented
    assert outputs(out, *SCANS[2])["dseg"].is_file()  # the deleted output is written again


def test_a_killed_run_resumes_from_the_work_directory(head_dataset, tmp_path, tiny_model_dir):
    work, out = tmp_path / "work", tmp_path / "out"
    cmd = [sys.executable, "-m", "bids_infantseg", str(head_dataset), str(out), "participant",
           "--model", str(tiny_model_dir), "--nprocs", "1", "-w", str(work)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    cached: list[Path] = []
    while time.time() < deadline and not cached and proc.poll() is None:
        cached = sorted(work.rglob("segment/result_segment.pklz"))
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # as a cluster's scheduler would
    proc.wait()
    assert cached, "no scan was segmented before the deadline"
    assert not all(outputs(out, *s)["dseg"].is_file() for s in SCANS), "finished before kill"
    stamps = {p: p.stat().st_mtime_ns for p in cached}

    assert run(head_dataset, out, tiny_model_dir, "-w", str(work)) == 0
    assert all(outputs(out, *s)["dseg"].is_file() for s in SCANS)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # finished work kept
    assert len(list(work.rglob("segment/result_segment.pklz"))) == len(SCANS)


def one_scan_dataset(root: Path) -> Path:
    """sub-01 with a single T2w: the usual one-participant-per-job run."""
    from tests.bids_factory import write_description

    write_description(root)
    write_head(t2w_path(root, "01"), seed=5)
    return root


@pytest.mark.parametrize("options", [[], ["--plugin", "MultiProc", "--omp-nthreads", "8"]],
                         ids=["defaults", "multiproc-8-threads"])
def test_one_scan_on_two_cpus_is_segmented(tmp_path, tiny_model_dir, monkeypatch, caplog,
                                           options):
    """One scan on a 2-CPU machine: MultiProc used to refuse the segment node's 2 threads
    (n_procs 1) before running anything, and the run still said "1 of 1" and exited 0."""
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    root, out = one_scan_dataset(tmp_path / "bids"), tmp_path / "out"
    assert main([str(root), str(out), "participant", "--model", str(tiny_model_dir),
                 "--device", "cpu", *options]) == 0
    assert nib.load(outputs(out, "sub-01", "sub-01/anat")["dseg"]).shape == (48, 56, 44)
    assert "1 of 1 scan(s) segmented" in caplog.text


def test_outputs_not_on_disk_fail_the_scan_whatever_nipype_says(head_dataset, tmp_path,
                                                                tiny_model_dir, monkeypatch,
                                                                caplog):
    """The writers 'succeed' without writing one scan's files and lose another's volumes:
    the count, the FAILED lines and the exit status come from the disk."""
    from bids_infantseg.interfaces.writers import DerivativeWriter

    write = DerivativeWriter._run_interface

    def lossy_write(self, runtime):
        if "run-1" in self.inputs.source_file:
            self._results["out_files"] = []
            return runtime
        runtime = write(self, runtime)
        for path in self._results["out_files"]:
            if "run-2" in path and path.endswith("volumes.tsv"):
                Path(path).unlink()
        return runtime

    monkeypatch.setattr(DerivativeWriter, "_run_interface", lossy_write)
    out = tmp_path / "out"
    assert run(head_dataset, out, tiny_model_dir, "--participant-label", "02") == 1
    failed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("FAILED")]
    run1, run2 = (t2w_path(head_dataset, "02", run=r) for r in ("1", "2"))
    assert failed == [f"FAILED {run1}: nothing written (no sub-02_run-1_space-T2w_desc-drawem9_"
                      "dseg.nii.gz)",
                      f"FAILED {run2}: sub-02_run-2_desc-drawem9_volumes.tsv missing"]
    assert "0 of 2 scan(s) segmented" in caplog.text


def test_a_crashed_step_is_named_on_its_scans_line(head_dataset, tmp_path, tiny_model_dir,
                                                  monkeypatch, caplog):
    """A node inside the embedded segmentation workflow crashes for one scan: its crash file
    (``bids_infantseg_wf.scan_<stem>.infantseg_wf.measure``) is mapped back to that scan,
    which writes nothing; the other scan is segmented."""
    from bids_infantseg.interfaces.segmentation import Measure

    measure = Measure._run_interface

    def broken(self, runtime):
        if "scan_sub_02_run_1" in self.inputs.in_dseg:
            raise RuntimeError("the disk is on fire")
        return measure(self, runtime)

    monkeypatch.setattr(Measure, "_run_interface", broken)
    out = tmp_path / "out"
    assert run(head_dataset, out, tiny_model_dir, "--participant-label", "02") == 1
    failed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("FAILED")]
    run1 = t2w_path(head_dataset, "02", run="1")
    assert len(failed) == 1, failed
    assert failed[0].startswith(f"FAILED {run1}: measure step failed: the disk is on fire "
                                "(details: ")
    assert failed[0].endswith("; nothing written (no sub-02_run-1_space-T2w_desc-drawem9_"
                              "dseg.nii.gz)")
    assert not list((out / "sub-02").rglob("sub-02_run-1_*"))
    assert "1 of 2 scan(s) segmented" in caplog.text
    qc_lines = [m for r in caplog.records if ": QC ok" in (m := r.getMessage())
                or ": QC: " in m]
    assert [m.split(": ")[0] for m in qc_lines] == ["sub-02_run-2"]  # the segmented scan's


def test_a_workflow_that_cannot_start_is_one_line_and_exit_1(tmp_path, tiny_model_dir,
                                                             caplog):
    """Nipype's own refusal (here: less memory than a node asks for) is not a scan's crash."""
    root, out = one_scan_dataset(tmp_path / "bids"), tmp_path / "out"
    assert run(root, out, tiny_model_dir, "--plugin", "MultiProc",
               "--plugin-args", '{"memory_gb": 0.01}') == 1
    errors = [r.getMessage() for r in caplog.records
              if r.levelname == "ERROR" and r.name == "bids_infantseg"]
    assert errors[0] == ("the workflow did not run to the end (MultiProc plugin): "
                         "Insufficient resources available for job")
    assert errors[1].startswith(f"FAILED {t2w_path(root, '01')}: nothing written")
    assert len(errors) == 2 and "0 of 1 scan(s) segmented" in caplog.text



def implausible_inputs(root: Path) -> dict[str, Path]:
    """The head dataset with a 10 mm voxel header on one scan, sub-02 aged 300 years and
    sub-01's first session at -13 weeks (a preterm baby: plausible)."""
    write_tsv(root / "participants.tsv", [{"participant_id": "sub-01", "sex": "F"},
                                          {"participant_id": "sub-02", "sex": "M",
                                           "age_months": str(300 * 12)}])
    write_tsv(root / "sub-01" / "sub-01_sessions.tsv",
              [{"session_id": "ses-01", "age_weeks": "-13"},
               {"session_id": "ses-02", "age_weeks": "26"}])
    coarse = t2w_path(root, "01", "02")
    img = nib.load(coarse)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), np.diag([10.0, 10.0, 10.0, 1.0])),
             coarse)
    return {"coarse": coarse, "old": t2w_path(root, "02", run="1"),
            "older": t2w_path(root, "02", run="2")}


def test_implausible_inputs_are_one_warning_line_each(head_dataset, tmp_path, caplog):
    from bids_infantseg.cli.participant import _check_images
    from bids_infantseg.io.discovery import discover

    files = implausible_inputs(head_dataset)
    good, failed = _check_images(discover(head_dataset, output_dir=tmp_path / "out"))
    assert len(good) == 4 and failed == []  # warnings: everything still runs
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert all("\n" not in line for line in lines)
    assert [line.split(": ")[1].split(" ")[0] for line in lines if str(files["coarse"]) in line
            ] == ["voxels", "field", "the"]
    for old in (files["old"], files["older"]):
        assert f"{old}: age 15642.0 weeks postnatal = 300 years (from participants.tsv:" \
               "age_months) is outside -20 to 150 weeks" in "\n".join(lines)
    assert not any("age -13" in line for line in lines)  # -13 weeks is a preterm newborn
    assert len(lines) == 5


def test_implausible_inputs_with_strict_are_errors_and_nothing_runs(head_dataset, tmp_path,
                                                                     tiny_model_dir, capsys,
                                                                     caplog):
    files = implausible_inputs(head_dataset)
    out = tmp_path / "out"
    assert run(head_dataset, out, tiny_model_dir, "--strict") == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 5 and all(line.startswith(tuple(map(str, files.values())))
                                    for line in errors)
    assert capsys.readouterr().err == ("bids_infantseg: error: 3 implausible inputs with "
                                       "--strict (listed above); nothing was run\n")
    assert not (out / "dataset_description.json").exists()
    assert not list(out.rglob("*.nii.gz"))


def test_strict_counts_implausible_files_not_their_problems(head_dataset, tmp_path,
                                                             caplog):
    """One file with three problems is one implausible input (before: "3 implausible
    input(s)"); each problem still has its line."""
    from bids_infantseg.cli.participant import ImplausibleInputError, _check_images
    from bids_infantseg.io.discovery import discover

    coarse = implausible_inputs(head_dataset)["coarse"]
    scans = [s for s in discover(head_dataset, output_dir=tmp_path / "out")
             if s.path == coarse]
    with pytest.raises(ImplausibleInputError) as refused:
        _check_images(scans, strict=True)
    assert str(refused.value) == ("1 implausible input with --strict (listed above); "
                                  "nothing was run")
    assert [r.getMessage().startswith(f"{coarse}: ") for r in caplog.records
            if r.levelname == "ERROR"] == [True] * 3


def test_inference_options_change_the_result_and_are_recorded(tmp_path, tiny_model_dir):
    """On by default as refine.DEFAULTS says; each option is part of the segment step's hash,
    and the dseg sidecar names the options that were on."""
    root = one_scan_dataset(tmp_path / "bids")
    work, out = tmp_path / "work", tmp_path / "out"
    files = outputs(out, "sub-01", "sub-01/anat")
    assert run(root, out, tiny_model_dir, "-w", str(work)) == 0
    sidecar = json.loads(files["dseg_json"].read_text())
    assert sidecar["InferenceOptions"] == ["--refine-em"]
    default = np.asanyarray(nib.load(files["dseg"]).dataobj)
    result = next(work.rglob("segment/result_segment.pklz"))
    stamp = result.stat().st_mtime_ns

    assert run(root, out, tiny_model_dir, "-w", str(work), "--batch-size", "3") == 0
    assert result.stat().st_mtime_ns == stamp  # how it runs is not what it computes

    assert run(root, out, tiny_model_dir, "-w", str(work), "--no-refine-em",
               "--refine-ventricles", "--tta-flip") == 0
    assert result.stat().st_mtime_ns != stamp
    assert json.loads(files["dseg_json"].read_text())["InferenceOptions"] == [
        "--tta-flip", "--refine-ventricles"]
    assert (np.asanyarray(nib.load(files["dseg"]).dataobj) != default).any()


def test_a_second_run_on_the_work_folder_is_one_line_and_exit_2(head_dataset, tmp_path,
                                                                  tiny_model_dir, capsys):
    from tests.utils.test_locks import holder_process

    work = tmp_path / "work" / "sub-01"  # the folder of a run selecting sub-01
    work.mkdir(parents=True)
    other = holder_process(work, 60)
    try:
        assert run(head_dataset, tmp_path / "out", tiny_model_dir, "-w", str(work.parent),
                   "--participant-label", "01") == 2
    finally:
        other.kill()
        other.wait()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"bids_infantseg: error: the work folder {work} is in use by another run (host "
        f"{os.uname().nodename}, pid {other.pid}, started "), err
    assert not list((tmp_path / "out").rglob("*.nii.gz"))


def test_with_wait_lock_a_run_waits_for_the_other_then_proceeds(tmp_path, tiny_model_dir,
                                                                caplog):
    from tests.utils.test_locks import holder_process

    root, out = one_scan_dataset(tmp_path / "bids"), tmp_path / "out"
    (out / ".work" / "all").mkdir(parents=True)
    other = holder_process(out / ".work" / "all", 3)
    try:
        assert run(root, out, tiny_model_dir, "--wait-lock") == 0
        assert other.poll() == 0  # it had finished
    finally:
        other.kill()
        other.wait()
    waits = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting")]
    assert len(waits) == 1 and f"pid {other.pid}" in waits[0]
    assert outputs(out, "sub-01", "sub-01/anat")["dseg"].is_file()


def test_runs_of_disjoint_participants_on_one_output_folder_both_succeed(finished_study):
    """Two terminals or a SLURM array, at the same time, default work folder: each run has
    its own work subfolder and lock (before: both ended "0 of 2 scan(s) segmented")."""
    apart = finished_study.apart
    assert [run.status for run in apart.values()] == [0, 0], [r.log for r in apart.values()]
    assert all("2 of 2 scan(s) segmented" in run.log for run in apart.values())
    out = apart["01"].out
    assert all(outputs(out, *scan)["volumes"].is_file() for scan in SCANS)
    assert sorted(p.name for p in (out / ".work").iterdir()) == ["sub-01", "sub-02"]


def test_nipype_is_quiet_under_multiproc_unless_vv(finished_study):
    """MultiProc's workers (fork server) read Nipype's configuration afresh: they printed
    ~45 "[Node]" lines a scan whatever the run asked for."""
    quiet = finished_study.together.log  # 4 scans, 2 at a time
    assert "MultiProc: 2 scan(s) at once" in quiet and "4 of 4 scan(s) segmented" in quiet
    assert "[Node]" not in quiet, quiet
    loud = finished_study.apart["01"].log  # 2 scans at once, -vv
    assert "MultiProc: 2 scan(s) at once" in loud
    assert loud.count('[Node] Executing "segment"') == 2, loud
