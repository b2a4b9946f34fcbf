import io

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from bids_infantseg.core.ages import PLAUSIBLE_WEEKS
from bids_infantseg.core.qc import BOUNDS_FILE, STRUCTURES
from bids_infantseg.model.labels import DRAWEM9, LabelSet
from bids_infantseg.report.colors import rgb
from bids_infantseg.report.figures import (
    BAND,
    NEUTRAL,
    OUTSIDE,
    age_text,
    figure_labels,
    growth_figure,
    growth_plot,
    references,
    split_ages,
)


def _study() -> pd.DataFrame:
    """Two infants scanned twice, one aged 300 years (months taken for weeks...), one
    without an age."""
    return pd.DataFrame({
        "participant_id": ["sub-01", "sub-01", "sub-02", "sub-02", "sub-03", "sub-04"],
        "age_weeks": [2.0, 26.0, 4.0, 30.0, 15642.0, None],
        "sex": ["F", "F", "M", "M", "F", None],
        "brain_volume_mm3": [420e3, 750e3, 2000e3, 760e3, 416e3, 750e3],
        "WM_mm3": [150e3, 300e3, 160e3, 310e3, 150e3, 290e3],
        "CSF_mm3": [90e3, 120e3, 95e3, 130e3, 90e3, 110e3]})


def _colour_pixels(png: bytes, colour: str) -> int:
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    return int((pixels == rgb(colour)).all(axis=1).sum())


def test_references_are_the_shipped_bounds_and_name_their_source():
    bands = references(DRAWEM9)
    assert set(bands) == {"brain_volume_mm3"} | {f"{a}_mm3" for a in STRUCTURES}
    assert "CSF_mm3" not in bands  # no source bounds fluid
    cgm = bands["cGM_mm3"]
    assert cgm.source.startswith(BOUNDS_FILE.name) and "Fidon 2021" in cgm.source
    assert "aseg" in cgm.source
    assert (cgm.low_ml < cgm.high_ml).all() and np.all(np.diff(cgm.weeks) > 0)
    site = LabelSet.from_records("site", [{"index": 0, "name": "bg"},
                                          {"index": 1, "name": "White matter",
                                           "abbreviation": "WM"}])
    assert set(references(site)) == {"brain_volume_mm3"}  # structure bounds are DrawEM9's


def test_outlying_and_missing_ages_leave_the_age_axis():
    ages = split_ages(_study(), "WM_mm3")
    assert list(ages.scaled["participant_id"]) == ["sub-01", "sub-01", "sub-02", "sub-02"]
    assert list(ages.beyond["participant_id"]) == ["sub-03"]
    assert list(ages.missing["participant_id"]) == ["sub-04"]
    fig = growth_plot(_study(), "WM_mm3", "White matter", reference=references(DRAWEM9)["WM_mm3"])
    main, missing, beyond = fig.axes
    low, high = main.get_xlim()
    assert PLAUSIBLE_WEEKS[0] <= low < 2 and 30 < high <= PLAUSIBLE_WEEKS[1]
    assert [t.get_text() for t in missing.get_xticklabels()] == ["no age"]
    assert "age out" in beyond.get_xticklabels()[0].get_text()
    assert [t.get_text() for t in beyond.texts] == [age_text(15642.0)] == ["15,642 wk (300 y)"]
    plain = growth_plot(_study().iloc[:4], "WM_mm3", "White matter")
    assert len(plain.axes) == 1  # no strip when every age is in range
    plt.close(fig)
    plt.close(plain)


def test_band_is_drawn_behind_the_scans_and_outliers_are_vermillion():
    table = _study()
    band = references(DRAWEM9)["brain_volume_mm3"]
    with_band = growth_figure(table, "brain_volume_mm3", "Brain tissue", reference=band)
    without = growth_figure(table, "brain_volume_mm3", "Brain tissue")
    assert _colour_pixels(with_band, BAND) > 5000 and _colour_pixels(without, BAND) == 0
    assert band.outside(np.array([4.0]), np.array([2000.0])).all()  # sub-02's 2 L at 4 weeks
    assert _colour_pixels(with_band, OUTSIDE) > 20 and _colour_pixels(without, OUTSIDE) == 0
    assert _colour_pixels(with_band, NEUTRAL) > 20  # the strips' scans: no band to judge by
    assert Image.open(io.BytesIO(with_band)).width >= 500


def test_growth_figure_without_ages_or_volumes():
    empty = _study().assign(age_weeks=None)
    assert growth_figure(empty, "WM_mm3", "White matter")[:4] == b"\x89PNG"
    none = _study().assign(WM_mm3=float("nan"))
    assert growth_figure(none, "WM_mm3", "White matter",
                         reference=references(DRAWEM9)["WM_mm3"])[:4] == b"\x89PNG"
    assert [c for c, _ in figure_labels(DRAWEM9)][:2] == ["CSF_mm3", "cGM_mm3"]
