"""Age-matched MNIInfant templates from a local TemplateFlow home, never from the network.

This is the only module that imports templateflow. Two library behaviours shape it:

* ``templateflow.api`` binds its cache to ``TEMPLATEFLOW_HOME`` *when templateflow is first
  imported* and memoises the PyBIDS index, so changing the variable later has no effect on
  ``templateflow.api``. We therefore build our own ``TemplateFlowClient`` from the value the
  variable has at call time (one client per home, indexed once per process).
* ``TemplateFlowClient.get`` downloads any matched file that is missing or a zero-byte stub
  (the TemplateFlow skeleton is all stubs). We only ever call ``ls`` (index lookup, no I/O
  beyond the home) and check the file ourselves, so a run cannot reach the network.

The pipeline uses the 1 mm head T2w (``res-1``, no ``desc``): native infant scans keep their
skull and scalp, so head-to-head alignment needs no skull stripping first.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from templateflow import TemplateFlowClient
from templateflow.conf.env import get_templateflow_home

from bids_infantseg.utils.errors import InfantsegError

TEMPLATE = "MNIInfant"
"""MNI unbiased nonlinear infant atlases 0-4.5 y (Fonov et al. 2009), one per age cohort."""

COHORT_AGE_MONTHS: dict[int, tuple[float, float]] = {
    1: (0.0, 2.0),
    2: (2.0, 5.0),
    3: (5.0, 8.0),
    4: (8.0, 11.0),
    5: (11.0, 14.0),
    6: (14.0, 17.0),
    7: (17.0, 21.0),
    8: (21.0, 27.0),
    9: (27.0, 33.0),
    10: (33.0, 44.0),
    11: (44.0, 60.0),
}
"""Postnatal age range of each cohort, from tpl-MNIInfant/template_description.json."""

WEEKS_PER_MONTH = 365.25 / 12 / 7


class TemplateError(InfantsegError, RuntimeError):
    """A template that is not available locally (or not uniquely identified)."""


def cohort_for_age(age_weeks: float | None) -> int:
    """The cohort whose age range holds this postnatal age (weeks after birth).

    Ranges share their end points; an age on a boundary goes to the younger cohort, as in
    nibabies. Missing or negative ages (preterm scans before term) get the youngest cohort
    and ages past the last range the oldest: a template is always chosen, never refused.
    """
    if age_weeks is None or age_weeks <= 0:
        return min(COHORT_AGE_MONTHS)
    months = age_weeks / WEEKS_PER_MONTH
    for cohort, (_, upper) in sorted(COHORT_AGE_MONTHS.items()):
        if months <= upper:
            return cohort
    return max(COHORT_AGE_MONTHS)


def templateflow_home() -> Path:
    """``TEMPLATEFLOW_HOME`` as it is now (not as it was when templateflow was imported)."""
    return Path(os.environ.get("TEMPLATEFLOW_HOME") or get_templateflow_home()).absolute()


def template_path(
    cohort: int, *, suffix: str = "T2w", desc: str | None = None, resolution: int = 1
) -> Path:
    """The one local file of this MNIInfant cohort, with every entity pinned.

    ``desc=None`` means "no desc entity" (the head image); ``desc="brain"`` with
    ``suffix="mask"`` gives the brain mask.
    """
    home = templateflow_home()
    what = (
        f"TemplateFlow template {TEMPLATE} cohort-{cohort} res-{resolution}"
        f"{f' desc-{desc}' if desc else ''} {suffix}"
    )
    if not home.is_dir() or not any(home.iterdir()):
        raise TemplateError(f"{what}: TEMPLATEFLOW_HOME={home} is missing or empty")
    found = _client(home).ls(
        TEMPLATE,
        cohort=cohort,
        resolution=resolution,
        suffix=suffix,
        desc=desc,
        extension=".nii.gz",
    )
    if len(found) != 1:
        problem = "not found" if not found else f"ambiguous ({len(found)} files)"
        raise TemplateError(f"{what} {problem} in TEMPLATEFLOW_HOME={home}")
    path = found[0]
    if not path.is_file() or path.stat().st_size == 0:
        raise TemplateError(
            f"{what} is not downloaded in TEMPLATEFLOW_HOME={home} "
            "(fetch it when building the image; runs never download)"
        )
    return path


@cache
def _client(home: Path) -> TemplateFlowClient:
    """One indexed client per home: indexing a full TemplateFlow home takes seconds."""
    return TemplateFlowClient(root=home, autoupdate=False, use_datalad=False)
