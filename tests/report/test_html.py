import pandas as pd

from bids_infantseg.report.html import page, png_tag, table_html
from tests.report.pages import decoded_images, external_references


def test_table_marks_missing_values_flags_links_and_wraps():
    table = pd.DataFrame({"scan": ["sub-01", "sub-02"], "volume": [1234.5, float("nan")],
                          "flags": ["a < b; c", ""]})
    text = table_html(table, flag_rows=[True, False], links=["../r.html", None], wrap="flags")
    assert '<tr class="flag"><td class="t"><a href="../r.html">sub-01</a>' in text
    assert "1,234.5" in text and "<td>n/a</td>" in text
    assert "a &lt; b<br>c" in text  # split before escaping: "&lt;" is not a separator


def test_page_is_self_contained_and_its_image_decodes():
    import io

    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    text = page("t <1>", png_tag(buffer.getvalue(), "x"))
    assert "<title>t &lt;1&gt;</title>" in text
    assert external_references(text) == []
    assert [i.size for i in decoded_images(text)] == [(100, 100)]
