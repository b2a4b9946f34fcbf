import html
import re

import pandas as pd

from bids_infantseg.core.qc import BOUNDS_FILE
from bids_infantseg.model.labels import ASEG, DRAWEM9
from bids_infantseg.report.figures import structure_columns
from bids_infantseg.report.group import _summed_title, group_report
from tests.report.pages import decoded_images, external_references


def _wide() -> pd.DataFrame:
    rows = []
    for pid, session, weeks, sex in (("sub-01", "ses-01", 2.0, "F"),
                                     ("sub-01", "ses-02", 26.0, "F"),
                                     ("sub-03", "ses-01", 15642.0, "F"),
                                     ("sub-04", "ses-01", None, "M")):
        row = {"participant_id": pid, "session_id": session, "age_weeks": weeks,
               "age_months": None, "age_source": None, "sex": sex,
               "intracranial_volume_mm3": 700e3, "brain_volume_mm3": 500e3}
        row |= {f"{lab.abbreviation}_mm3": 50e3 for lab in DRAWEM9.labels if lab.index}
        rows.append(row)
    return pd.DataFrame(rows)


def test_group_report_names_band_sources_and_flags_outlying_ages():
    page, figures = group_report(labels=DRAWEM9, wide=_wide(), qc=pd.DataFrame(), problems=[],
                                 models=[])
    assert external_references(page) == []
    assert len(figures) == 2 + 8 and len(decoded_images(page)) == len(figures)
    captions = [html.unescape(c) for c in re.findall(r"<figcaption>(.*?)</figcaption>", page)]
    assert len(captions) == len(figures)
    with_band = [c for c in captions if c.startswith("Shaded: plausible range by age from "
                                                     + BOUNDS_FILE.name)]
    assert len(with_band) == 1 + 7  # brain tissue and the 7 bounded structures
    assert sum("Knickmeyer 2008" in c for c in with_band) == 1  # brain: published ranges
    assert sum("DCAN Labs BIBSnet" in c and "Fidon 2021" in c for c in with_band) == 8
    assert captions.count("No reference range for this volume.") == 2  # intracranial, CSF
    text = html.unescape(page)
    assert "not to scale: sub-03 ses-01 (15,642 wk (300 y))" in text
    assert "No age, drawn in the 'no age' strip of each figure: sub-04 ses-01" in text


def test_group_report_with_every_age_in_range_says_so():
    wide = _wide().iloc[:2]
    page, _ = group_report(labels=DRAWEM9, wide=wide, qc=pd.DataFrame(), problems=[],
                           models=[])
    assert "every scan has an age in range" in page and "not to scale" not in page


def test_an_aseg_study_gets_its_drawem9_structures_summed_with_their_bands():
    wide = _wide().drop(columns=[f"{lab.abbreviation}_mm3" for lab in DRAWEM9.labels
                                 if lab.index])
    wide = wide.assign(**{f"{lab.abbreviation}_mm3": 1e3 * lab.index for lab in ASEG.labels
                          if lab.index})
    page, figures = group_report(labels=ASEG, wide=wide, qc=pd.DataFrame(), problems=[],
                                 models=[])
    brain_labels = len(ASEG) - 1
    assert len(figures) == 2 + brain_labels + 7 and len(decoded_images(page)) == len(figures)
    assert all(re.fullmatch(r"desc-aseg_label-[0-9A-Za-z]+_growth\.png", n) for n in figures)
    assert "desc-aseg_label-LHip_growth.png" in figures
    captions = [html.unescape(c) for c in re.findall(r"<figcaption>(.*?)</figcaption>", page)]
    assert sum(c.startswith("Shaded:") for c in captions) == 1 + 7
    assert {f"desc-aseg_label-drawem9{s}_growth.png" for s in ("cGM", "Hip", "Cbm")} <= set(figures)
    hip = structure_columns(ASEG)["drawem9-Hip_mm3"]
    assert (hip.structure, hip.name) == ("Hip", "Hippocampus and amygdala")
    assert hip.members == ("L-Hip_mm3", "L-Amy_mm3", "R-Hip_mm3", "R-Amy_mm3")
    assert structure_columns(DRAWEM9)["Hip_mm3"].members == ("Hip_mm3",)


def test_summed_structure_titles_fit_their_figure():
    titles = {c: _summed_title(e, "aseg") for c, e in structure_columns(ASEG).items()}
    assert titles["drawem9-cGM_mm3"] == "Cortical grey matter (L-Ctx + R-Ctx)"
    assert titles["drawem9-dGM_mm3"] == "Deep grey matter (12 aseg labels summed)"
    assert max(map(len, titles.values())) <= 60
