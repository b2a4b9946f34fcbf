import html
import re

import pandas as pd

from bids_infantseg.model.labels import DRAWEM9
from bids_infantseg.qc import BOUNDS_FILE
from bids_infantseg.report.group import group_report
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
