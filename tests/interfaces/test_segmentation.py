import pytest

from bids_infantseg.core.ages import WEEKS_PER_MONTH
from bids_infantseg.interfaces.segmentation import weeks_of


@pytest.mark.parametrize("weeks", [1.5, 3.0, 6.0, 12.0, 26.0, -13.0])
def test_an_age_read_in_weeks_comes_back_as_it_was(weeks):
    """The workflow passes ages in months; QC's sidecar must still say 12 weeks, not
    11.999999999999998."""
    assert weeks_of(weeks / WEEKS_PER_MONTH) == weeks


def test_an_unknown_age_stays_unknown():
    assert weeks_of(None) is None
