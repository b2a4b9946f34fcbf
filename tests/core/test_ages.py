import logging

import pytest

from bids_infantseg.core.ages import Age, AgeLookup, age_from_row, implausible_age, weeks_per_unit
from tests.bids_factory import write_json, write_tsv

SCAN = "sub-01/ses-02/anat/sub-01_ses-02_T2w.nii.gz"


@pytest.mark.parametrize(("units", "weeks"), [
    ("weeks", 1.0), ("week", 1.0), ("w", 1.0), ("Wks", 1.0),
    ("days", 1 / 7), ("day", 1 / 7), ("d", 1 / 7),
    ("months", 4.345), ("month", 4.345), ("mo", 4.345),
    ("years", 52.14), ("year", 52.14), ("y", 52.14), ("yrs", 52.14),
])
def test_units_singular_plural_abbreviated(units, weeks):
    assert weeks_per_unit(units) == pytest.approx(weeks)


def test_ambiguous_units_are_refused():
    with pytest.raises(ValueError):
        weeks_per_unit("m")  # metres? minutes? months?


@pytest.mark.parametrize(("row", "units", "weeks", "source"), [
    ({"age_weeks": "12"}, None, 12.0, "t.tsv:age_weeks"),
    ({"age_months": "2"}, None, 8.69, "t.tsv:age_months"),
    ({"age_days": "14"}, None, 2.0, "t.tsv:age_days"),
    ({"age": "0.5"}, None, 26.07, "t.tsv:age"),  # BIDS default: years
    ({"age": "3"}, "months", 13.035, "t.tsv:age"),
    ({"age_weeks": "n/a", "age_days": "7"}, None, 1.0, "t.tsv:age_days"),
])
def test_age_columns(row, units, weeks, source):
    age = age_from_row(row, table="t.tsv", age_units=units)
    assert age.weeks == pytest.approx(weeks)
    assert age.source == source


def test_scan_age_is_post_menstrual_and_may_be_negative():
    age = age_from_row({"scan_age": "36.5"}, table="sessions.tsv", age_units=None)
    assert age.weeks == pytest.approx(-3.5)
    assert "post-menstrual" in age.source


def test_months_property():
    assert Age(4.345 * 3, "x").months == pytest.approx(3.0)


def test_unparseable_age_warns_and_tries_next_column(caplog):
    with caplog.at_level(logging.WARNING, logger="bids_infantseg"):
        age = age_from_row({"age_weeks": "ten", "age_days": "70"}, table="t", age_units=None)
    assert age.weeks == pytest.approx(10.0)
    assert "ten" in caplog.text


def test_unknown_units_warn_and_give_none(caplog):
    with caplog.at_level(logging.WARNING, logger="bids_infantseg"):
        assert age_from_row({"age": "3"}, table="t", age_units="fortnights") is None
    assert "fortnights" in caplog.text


def _dataset(tmp_path):
    write_tsv(tmp_path / "participants.tsv",
              [{"participant_id": "sub-01", "age": "2"}])
    write_tsv(tmp_path / "sub-01" / "sub-01_sessions.tsv",
              [{"session_id": "ses-02", "age_months": "5"}])
    write_tsv(tmp_path / "sub-01" / "ses-02" / "sub-01_ses-02_scans.tsv",
              [{"filename": "anat/sub-01_ses-02_T2w.nii.gz", "age_weeks": "21"}])
    return tmp_path


def test_scans_tsv_wins(tmp_path):
    age = AgeLookup(_dataset(tmp_path)).age(SCAN, "01", "02")
    assert (age.weeks, age.source) == (21.0, "scans.tsv:age_weeks")


def test_sessions_tsv_before_participants_tsv(tmp_path):
    root = _dataset(tmp_path)
    (root / "sub-01" / "ses-02" / "sub-01_ses-02_scans.tsv").unlink()
    age = AgeLookup(root).age(SCAN, "01", "02")
    assert age.source == "sessions.tsv:age_months"
    assert age.months == pytest.approx(5.0)


def test_participants_tsv_with_sidecar_units(tmp_path):
    root = _dataset(tmp_path)
    (root / "sub-01" / "ses-02" / "sub-01_ses-02_scans.tsv").unlink()
    (root / "sub-01" / "sub-01_sessions.tsv").unlink()
    assert AgeLookup(root).age(SCAN, "01", "02").weeks == pytest.approx(104.28)  # years
    write_json(root / "participants.json", {"age": {"Units": "week"}})
    age = AgeLookup(root).age(SCAN, "01", "02")
    assert (age.weeks, age.source) == (2.0, "participants.tsv:age")


def test_dhcp_sessions_scan_age(tmp_path):
    write_tsv(tmp_path / "sub-01" / "sub-01_sessions.tsv",
              [{"session_id": "ses-02", "scan_age": "42.0"}])
    age = AgeLookup(tmp_path).age(SCAN, "01", "02")
    assert age.weeks == pytest.approx(2.0)
    assert age.source.startswith("sessions.tsv:scan_age")


def test_missing_age_is_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="bids_infantseg"):
        assert AgeLookup(tmp_path).age(SCAN, "01", "02") is None
    assert "no age found" in caplog.text


def test_participant_row(tmp_path):
    lookup = AgeLookup(_dataset(tmp_path))
    assert lookup.participant("01")["age"] == "2"
    assert lookup.participant("99") is None


@pytest.mark.parametrize("weeks", [-20.0, -13.0, 0.0, 52.0, 150.0])
def test_ages_from_fetal_to_three_years_are_plausible(weeks):
    assert implausible_age(Age(weeks, "sessions.tsv:age_weeks")) is None


def test_300_years_and_a_fetus_too_young_are_implausible():
    old = implausible_age(Age(300 * 12 * 4.345, "participants.tsv:age"))
    assert old == ("age 15642.0 weeks postnatal = 300 years (from participants.tsv:age) is "
                   "outside -20 to 150 weeks: check the age's column and units")
    assert "-25.0 weeks" in implausible_age(Age(-25.0, "sessions.tsv:scan_age"))
