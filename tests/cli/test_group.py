"""The group level on real participant outputs (tiny model): tables, QC, figures, report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bids_infantseg.cli.group import UnusableTable, read_volume_table
from bids_infantseg.cli.main import main
from bids_infantseg.model.labels import DRAWEM9
from tests.report.pages import (
    CHROMIUM,
    NO_CHROMIUM,
    decoded_images,
    external_references,
    loaded_widths,
    screenshot,
)
from tests.validator import ACCEPTED_WARNINGS, validate

SCANS = ("sub-01_ses-01", "sub-01_ses-02", "sub-02_run-1", "sub-02_run-2")


def group(bids: Path, out: Path) -> int:
    return main([str(bids), str(out), "group"])


@pytest.fixture(scope="module")
def study(tmp_path_factory, finished_study) -> dict[str, Path]:
    """The shared finished study's four scans of two infants, segmented in one parallel run
    and one run per participant (sub-03 is in participants.tsv but has no image), copied
    here and given their group outputs."""
    root = tmp_path_factory.mktemp("study")
    for run in (finished_study.together, *finished_study.apart.values()):
        assert run.status == 0, run.log
    for name, out in (("together", finished_study.together.out),
                      ("apart", finished_study.apart["01"].out)):  # both runs' outputs
        shutil.copytree(out, root / name, ignore=shutil.ignore_patterns(".work"))
    bids, together, apart = finished_study.bids, root / "together", root / "apart"
    assert group(bids, together) == 0 and group(bids, apart) == 0
    return {"bids": bids, "together": together, "apart": apart, "root": root}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_group_output_is_the_same_however_participants_were_run(study):
    together, apart = _files(study["together"] / "group"), _files(study["apart"] / "group")
    assert sorted(together) == sorted(apart)
    different = [name for name in together if together[name] != apart[name]]
    assert different == []


def test_the_validator_accepts_the_folder_with_group_outputs(study):
    errors, warnings = validate(study["together"])
    assert errors == [], errors
    assert warnings <= ACCEPTED_WARNINGS, warnings


def test_wide_long_and_qc_tables(study):
    folder = study["together"] / "group"
    wide = pd.read_csv(folder / "desc-drawem9_volumes.tsv", sep="\t")
    assert len(wide) == 4
    assert list(wide.columns[:3]) == ["participant_id", "session_id", "run"]
    for column in ("age_weeks", "age_months", "sex", "intracranial_volume_mm3",
                   "brain_volume_mm3", "CSF_mm3", "Hip_mm3"):
        assert column in wide.columns
    assert list(wide["age_weeks"]) == pytest.approx([2, 26, 52.14, 52.14])
    assert list(wide["sex"]) == ["F", "F", "M", "M"]
    label_columns = [c for c in wide.columns if c.endswith("_mm3") and "volume" not in c]
    assert len(label_columns) == 9  # every label but "Unknown" (outside the head)
    assert (wide["intracranial_volume_mm3"] >= wide["brain_volume_mm3"]).all()
    for stem in ("desc-drawem9_volumes", "desc-drawem9_volumes_long", "desc-drawem9_qc"):
        table = pd.read_csv(folder / f"{stem}.tsv", sep="\t")
        sidecar = json.loads((folder / f"{stem}.json").read_text())
        assert set(table.columns) <= set(sidecar), stem
    long = pd.read_csv(folder / "desc-drawem9_volumes_long.tsv", sep="\t")
    assert len(long) == 4 * 9
    merged = long.pivot_table(index=["participant_id", "session_id", "run"], columns="name",
                              values="volume_mm3", dropna=False)
    assert merged.notna().any().all()
    qc = pd.read_csv(folder / "desc-drawem9_qc.tsv", sep="\t")
    assert set(qc["brain_volume_status"]) <= {"ok", "below", "above"}
    assert (qc["flagged"] == (qc["brain_volume_status"] != "ok") | qc["flags"].notna()).all()
    assert (qc["mc_samples"] == 2).all()
    figures = sorted(p.name for p in (folder / "figures").glob("*.png"))
    assert "desc-drawem9_label-brain_growth.png" in figures and len(figures) == 2 + 8


def test_reports_are_self_contained(study):
    out = study["together"]
    pages = [out / "group" / "desc-drawem9_report.html"]
    pages += [out / "sub-01" / "figures" / f"{s}_report.html" for s in SCANS[:2]]
    pages += [out / "sub-02" / "figures" / f"{s}_report.html" for s in SCANS[2:]]
    for page in pages:
        text = page.read_text()
        assert external_references(text) == [], page
        images = decoded_images(text)
        assert len(images) == (10 if "group" in page.parts else 2), page
        assert all(min(i.size) > 20 for i in images)
    assert "sub-03: no outputs" in pages[0].read_text()
    scan_page = pages[2].read_text()  # sub-01_ses-02
    for expected in ("26.0 weeks", "sessions.tsv:age_weeks", "tiny-test 0.0.1",
                     "Dice between views", "MC entropy", "plausible brain tissue volume"):
        assert expected in scan_page


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_reports_render_in_chromium_with_every_image_loaded(study, tmp_path):
    out = study["together"]
    for page in (out / "group" / "desc-drawem9_report.html",
                 out / "sub-01" / "figures" / "sub-01_ses-02_report.html"):
        count, widths = loaded_widths(page)
        assert count == len(decoded_images(page.read_text())) and count > 0, page
        assert len(widths) == count and min(widths) > 0, (page, widths)
        shot = screenshot(page, tmp_path / f"{page.stem}.png")
        assert shot.stat().st_size > 10_000


def test_group_needs_only_the_tables_of_the_raw_dataset(study, tmp_path):
    bids = tmp_path / "bids"
    shutil.copytree(study["bids"], bids, ignore=shutil.ignore_patterns("*.nii.gz"))
    out = tmp_path / "out"
    shutil.copytree(study["together"], out, ignore=shutil.ignore_patterns("group"))
    assert group(bids, out) == 0
    assert _files(out / "group") == _files(study["together"] / "group")


def test_missing_and_partial_outputs_are_listed_not_fatal(study, tmp_path, caplog):
    out = tmp_path / "out"
    shutil.copytree(study["together"], out, ignore=shutil.ignore_patterns("group"))
    (out / "sub-01/ses-02/anat/sub-01_ses-02_space-T2w_desc-drawem9_dseg.nii.gz").unlink()
    (out / "sub-02/figures/sub-02_run-1_report.html").unlink()
    assert group(study["bids"], out) == 0
    wide = pd.read_csv(out / "group" / "desc-drawem9_volumes.tsv", sep="\t")
    assert len(wide) == 3  # the scan without its label map is incomplete: not counted
    qc = pd.read_csv(out / "group" / "desc-drawem9_qc.tsv", sep="\t")
    assert qc["report"].isna().sum() == 1
    page = (out / "group" / "desc-drawem9_report.html").read_text()
    assert "sub-01_ses-02: incomplete: label map" in page
    assert "sub-02_run-1: partial: HTML report" in page
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "sub-03: no outputs" in warnings


def test_group_without_participant_outputs_is_a_usage_error(study, tmp_path, capsys):
    assert group(study["bids"], tmp_path / "empty") == 2
    assert "run the participant level first" in capsys.readouterr().err


def test_an_age_missing_at_segmentation_is_read_from_the_tables(study, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(study["together"], out, ignore=shutil.ignore_patterns("group"))
    sidecar = out / "sub-01/ses-02/anat/sub-01_ses-02_space-T2w_desc-drawem9_dseg.json"
    content = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**content, "Age": None}))
    assert group(study["bids"], out) == 0
    wide = pd.read_csv(out / "group" / "desc-drawem9_volumes.tsv", sep="\t")
    assert wide.loc[1, "age_weeks"] == pytest.approx(26)
    assert wide.loc[1, "age_source"] == "sessions.tsv:age_weeks"


VOLUMES_01_2 = "sub-01/ses-02/anat/sub-01_ses-02_desc-drawem9_volumes.tsv"


def _first_rows(path: Path) -> bytes:
    return b"".join(path.read_bytes().splitlines(keepends=True)[:2])  # header and label 0


@pytest.mark.parametrize("damage,reason", [
    (lambda path: b"", "volume table unusable (sub-01_ses-02_desc-drawem9_volumes.tsv: "
                       "empty file)"),
    (lambda path: bytes(range(255, 0, -1)) * 3, "volume table unusable "
                                                "(sub-01_ses-02_desc-drawem9_volumes.tsv: "
                                                "not a TSV table"),
    (_first_rows, "volume table unusable (sub-01_ses-02_desc-drawem9_volumes.tsv: 1 row(s) "
                  "for the 10 labels of drawem9: no row for label(s) 1, 2, 3, 4, 5, 6, 7, 8, "
                  "9)"),
])
def test_an_unusable_volume_table_is_listed_and_the_rest_summarised(study, tmp_path, caplog,
                                                                    damage, reason):
    out = tmp_path / "out"
    shutil.copytree(study["together"], out, ignore=shutil.ignore_patterns("group"))
    table = out / VOLUMES_01_2
    table.write_bytes(damage(table))
    assert group(study["bids"], out) == 0
    wide = pd.read_csv(out / "group" / "desc-drawem9_volumes.tsv", sep="\t",
                       keep_default_na=False)
    assert list(zip(wide["participant_id"], wide["session_id"], strict=True)) == [
        ("sub-01", "ses-01"), ("sub-02", "n/a"), ("sub-02", "n/a")]  # never a volume of 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(w.startswith(f"sub-01_ses-02: incomplete: {reason}") for w in warnings), warnings
    page = (out / "group" / "desc-drawem9_report.html").read_text()
    assert f"sub-01_ses-02: incomplete: {reason}" in page
    assert main([str(study["bids"]), str(out), "group", "--strict"]) == 1


def test_strict_group_level_exits_0_when_nothing_is_missing(study, tmp_path):
    bids = tmp_path / "bids"
    shutil.copytree(study["bids"], bids, ignore=shutil.ignore_patterns("*.nii.gz"))
    participants = pd.read_csv(bids / "participants.tsv", sep="\t", dtype=str)
    participants[participants["participant_id"] != "sub-03"].to_csv(
        bids / "participants.tsv", sep="\t", index=False)  # sub-03 has no scan at all
    out = tmp_path / "out"
    shutil.copytree(study["together"], out, ignore=shutil.ignore_patterns("group"))
    assert main([str(bids), str(out), "group", "--strict"]) == 0
    (out / "sub-02/figures/sub-02_run-1_report.html").unlink()  # partial: counted, listed
    assert main([str(bids), str(out), "group", "--strict"]) == 1
    assert len(pd.read_csv(out / "group" / "desc-drawem9_volumes.tsv", sep="\t")) == 4


def test_an_unreadable_sidecar_leaves_the_scan_out_or_partial(study, tmp_path, caplog):
    out = tmp_path / "out"
    shutil.copytree(study["together"], out, ignore=shutil.ignore_patterns("group"))
    (out / "sub-01/ses-02/anat/sub-01_ses-02_space-T2w_desc-drawem9_dseg.json").write_text("{")
    (out / "sub-02/anat/sub-02_run-1_desc-drawem9_qc.json").write_text("[]")
    assert group(study["bids"], out) == 0
    qc = pd.read_csv(out / "group" / "desc-drawem9_qc.tsv", sep="\t")
    assert len(qc) == 3
    assert qc["flags"].str.contains("no QC table from the participant level").sum() == 1
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert ("sub-01_ses-02: incomplete: label map sidecar unusable "
            "(sub-01_ses-02_space-T2w_desc-drawem9_dseg.json: not a JSON file (") in warnings
    assert ("sub-02_run-1: partial: QC sidecar unusable (sub-02_run-1_desc-drawem9_qc.json: "
            "not a JSON object)") in warnings


VALID = ("participant_id\tsession_id\tindex\tname\tvoxels\tvolume_mm3\n"
         + "".join(f"sub-01\tn/a\t{i}\tx\t1\t{i}.5\n" for i in range(10)))


@pytest.mark.parametrize("change,reason", [
    (lambda t: t.replace("\t3.5\n", "\tn/a\n"), "line 5: index 3, volume_mm3 n/a (a label index "
                                                         "and a volume >= 0 expected)"),
    (lambda t: t.replace("\t3.5\n", "\t-3.5\n"), "line 5: index 3, volume_mm3 -3.5 (a label "
                                                          "index and a volume >= 0 expected)"),
    (lambda t: t.replace("\t9\tx", "\t8\tx"), "10 row(s) for the 10 labels of drawem9: no row "
                                             "for label(s) 9; label(s) 8 repeated"),
    (lambda t: t + "sub-01\tn/a\t12\tx\t1\t1\n", "11 row(s) for the 10 labels of drawem9: "
                                                "label(s) 12 not in drawem9"),
    (lambda t: t.replace("sub-01", "sub-02"), "rows of sub-02, not sub-01"),
    (lambda t: t.replace("volume_mm3", "volume"), "not a volume table (no volume_mm3 column)"),
])
def test_volume_table_checks_say_what_is_wrong(tmp_path, change, reason):
    path = tmp_path / "v.tsv"
    path.write_text(VALID)
    assert read_volume_table(path, DRAWEM9, "sub-01")["volume_mm3"].sum() == 50
    path.write_text(change(VALID))
    with pytest.raises(UnusableTable) as raised:
        read_volume_table(path, DRAWEM9, "sub-01")
    assert str(raised.value) == reason
