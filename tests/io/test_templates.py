import importlib.util
import json
import zipfile
from pathlib import Path

import pytest

from bids_infantseg.io.templates import (
    COHORT_AGE_MONTHS,
    WEEKS_PER_MONTH,
    TemplateError,
    cohort_for_age,
    template_path,
)
from tests.templateflow_home import build_templateflow_home


@pytest.fixture
def home(tmp_path, monkeypatch):
    root = build_templateflow_home(tmp_path / "tf", cohorts=(1, 3))
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(root))
    return root


def test_cohort_table_matches_the_templateflow_skeleton():
    # The skeleton shipped with templateflow holds the real template_description.json;
    # locate it without importing templateflow (whose import has side effects).
    package = Path(importlib.util.find_spec("templateflow").origin).parent
    with zipfile.ZipFile(package / "conf" / "templateflow-skel.zip") as skeleton:
        description = json.loads(skeleton.read("tpl-MNIInfant/template_description.json"))
    real = {
        int(c): tuple(v["age"]) for c, v in description["cohort"].items() if v["units"] == "months"
    }
    assert real == COHORT_AGE_MONTHS


@pytest.mark.parametrize(
    ("age_weeks", "cohort"),
    [
        (None, 1),
        (-6.0, 1),  # preterm, scanned before term
        (0.0, 1),
        (4.0, 1),
        (2.0 * WEEKS_PER_MONTH, 1),  # boundaries go to the younger cohort
        (2.1 * WEEKS_PER_MONTH, 2),
        (26.0, 3),
        (52.0, 5),
        (104.0, 8),
        (60.0 * WEEKS_PER_MONTH, 11),
        (400.0, 11),
    ],
)
def test_cohort_for_age(age_weeks, cohort):
    assert cohort_for_age(age_weeks) == cohort


def test_template_path_pins_one_local_file(home):
    t2w = template_path(1)
    assert t2w == home / "tpl-MNIInfant/cohort-1/tpl-MNIInfant_cohort-1_res-1_T2w.nii.gz"
    assert template_path(3).name == "tpl-MNIInfant_cohort-3_res-1_T2w.nii.gz"
    mask = template_path(1, suffix="mask", desc="brain")
    assert mask.name == "tpl-MNIInfant_cohort-1_res-1_desc-brain_mask.nii.gz"


def test_home_is_read_at_call_time(tmp_path, monkeypatch, home):
    assert template_path(1).is_relative_to(home)
    other = build_templateflow_home(tmp_path / "other", cohorts=(1,))
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(other))
    assert template_path(1).is_relative_to(other)


def test_missing_cohort_is_one_clear_line(home):
    with pytest.raises(TemplateError) as caught:
        template_path(2)
    message = str(caught.value)
    assert "\n" not in message
    assert "MNIInfant" in message and "cohort-2" in message and str(home) in message


def test_missing_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(TemplateError, match="missing or empty"):
        template_path(1)
    assert not (tmp_path / "nowhere").exists()


def test_stub_file_is_an_error_not_a_download(tmp_path, monkeypatch):
    # A TemplateFlow skeleton lists every file as a zero-byte stub; templateflow's get()
    # would download it. We must fail instead.
    root = build_templateflow_home(tmp_path / "tf", cohorts=(1,))
    stub = root / "tpl-MNIInfant/cohort-2/tpl-MNIInfant_cohort-2_res-1_T2w.nii.gz"
    stub.parent.mkdir()
    stub.touch()
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(root))

    import templateflow.client

    def no_network(*args, **kwargs):
        raise AssertionError("templateflow tried to download")

    monkeypatch.setattr(templateflow.client, "_s3_get", no_network)
    with pytest.raises(TemplateError, match="not downloaded"):
        template_path(2)
