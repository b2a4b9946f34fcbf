"""T2 contrast over the first year: white matter brighter than cortex at birth, isointense
around 6-8 months (within 10% at 6 months, as on the MIT 6-month template: 1.08; equal by
8), darker (adult-like) at 12; the earlier-myelinating structures darken first. (The old
linear priors fail the deep-structure test: they darkened at the white matter's pace.)"""

from __future__ import annotations

import numpy as np

from bids_infantseg import synth
from bids_infantseg.synth.classes import INDEX, contrast_centres

WM, GM = INDEX["wm"], INDEX["cortical_gm"]


def generated_ratio(age_months: float, volumes: int = 12) -> float:
    """White over cortical grey mean of images generated at the age (the configured
    jitter of means, age, texture, bias, gamma and noise included), averaged over volumes."""
    gen = np.full((24, 24, 24), GM, dtype=np.uint8)
    gen[:, 12:] = WM
    ratios = []
    for seed in range(volumes):
        image = synth.synthesize_image(gen, np.random.default_rng(seed), age_months, 1.0,
                                       random_contrast=0.0)
        ratios.append(image[:, 15:].mean() / image[:, :9].mean())
    return float(np.mean(ratios))


def test_white_and_grey_matter_cross_over_the_first_year():
    assert generated_ratio(0.0) > 1.25
    assert abs(generated_ratio(6.0) - 1.0) < 0.1
    assert abs(generated_ratio(8.0) - 1.0) < 0.05
    assert generated_ratio(12.0) < 0.9


def test_deep_structures_darken_before_the_white_matter():
    def share_done(name: str, months: float) -> float:
        birth, year = contrast_centres(0.0)[INDEX[name]], contrast_centres(12.0)[INDEX[name]]
        return float((birth - contrast_centres(months)[INDEX[name]]) / (birth - year))

    for name in ("brainstem", "cerebellar_wm", "pallidum", "ventral_dc"):
        assert share_done(name, 3.0) > share_done("wm", 3.0)
