import numpy as np
import pytest

from bids_infantseg.core import qc
from bids_infantseg.core.volumes import label_volumes
from bids_infantseg.model.labels import DRAWEM9
from bids_infantseg.report.scan import scan_report
from tests.report.pages import (
    CHROMIUM,
    NO_CHROMIUM,
    decoded_images,
    external_references,
    loaded_widths,
)
from tests.report.test_viewer import _images


@pytest.fixture
def report() -> str:
    t2w, dseg = _images()
    labels = np.asanyarray(dseg.dataobj)
    volumes = label_volumes(labels, dseg.affine, DRAWEM9)
    table = qc.label_table(volumes, DRAWEM9, agreement={2: 0.9, 3: 0.95},
                           pieces=qc.components(labels, DRAWEM9), uncertain=None)
    summary = qc.summary(table, DRAWEM9, age_weeks=None, view_pairs={"axial-coronal": 0.9},
                         mc_samples=0)
    return scan_report(title="sub-01", t2w=t2w, dseg=dseg, labels=DRAWEM9, volumes=volumes,
                       qc_table=table, qc_summary=summary,
                       scan={"age used": "unknown"}, provenance={"model": "m 1"})


def test_scan_report_shows_views_tables_and_warnings(report):
    assert external_references(report) == []
    assert len(decoded_images(report)) == 2  # the viewer's T2w and label volumes
    assert report.count('<figure class="view"') == 3
    assert report.count('<input type="checkbox" data-class=') == 9  # every label but 0
    assert "no age: volumes checked against the whole first year (0-52.1 weeks)" in report
    assert "in the whole first year (0-52.1 weeks; no age known)" in report  # no adult default
    assert "run with --mc-samples N" in report
    assert "Hippocampus and amygdala" in report


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_scan_report_images_load_in_chromium(report, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(report)
    count, widths = loaded_widths(page)
    assert count == 2 and len(widths) == 2 and min(widths) > 0
