"""Self-contained HTML pages: every image is inside the page (base64 PNG or JPEG), scripts are
inline (the scan report's slice viewer), no external script, style sheet or font, so a
report opens offline, mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence

import pandas as pd

STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1150px;
padding:0 18px 40px;color:#222;background:#fff}
h1{font-size:1.45em;border-bottom:3px solid #345;padding:14px 0 8px}
h2{font-size:1.15em;margin-top:28px;border-bottom:1px solid #ccc;padding-bottom:3px}
h3{font-size:1em;margin:14px 0 4px;color:#345}
table{border-collapse:collapse;font-size:.85em;margin:6px 0}
th,td{padding:3px 9px;border-bottom:1px solid #e3e3e3;text-align:right}
th{background:#eef1f5}
td:first-child,th:first-child,td.t{text-align:left}
.warn{background:#fff4e0;border-left:5px solid #e69500;padding:6px 10px;margin:6px 0}
.ok{background:#eaf6ea;border-left:5px solid #3a3;padding:6px 10px;margin:6px 0}
.flag{background:#ffe5e5}
.wrap{white-space:normal;text-align:left;min-width:260px}
td:first-child{white-space:nowrap}
.swatch{display:inline-block;width:.9em;height:.9em;border:1px solid #555;margin-right:5px;
vertical-align:middle}
.grid{display:flex;flex-wrap:wrap;gap:10px}
.grid figure{width:560px;margin:0}
.grid img{width:100%;border:1px solid #ddd}
figcaption{font-size:.75em;color:#444;margin:2px 0 8px}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px;font-size:.9em}
dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}
"""


TEXT_CELL = '<td class="t">'
WRAP = ' class="wrap"'


def image_tag(data: bytes, alt: str, css: str = "", *, mime: str = "image/png",
              attrs: str = "") -> str:
    """An ``<img>`` carrying the image itself; ``attrs`` is extra markup (id, hidden, ...)."""
    encoded = base64.b64encode(data).decode("ascii")
    extra = (f' class="{css}"' if css else "") + (f" {attrs}" if attrs else "")
    return f'<img{extra} alt="{html.escape(alt)}" src="data:{mime};base64,{encoded}">'


def png_tag(png: bytes, alt: str, css: str = "") -> str:
    return image_tag(png, alt, css)


def table_html(table: pd.DataFrame, *, flag_rows: Sequence[bool] | None = None,
               links: Sequence[str | None] | None = None, wrap: str | None = None,
               digits: int = 1) -> str:
    """A table with ``n/a`` for missing values; rows marked in ``flag_rows`` highlighted;
    ``links`` turn each row's first cell into a link; column ``wrap`` holds long text whose
    ``"; "``-separated parts go on lines of their own."""
    head = "".join(f'<th{WRAP if c == wrap else ""}>{html.escape(str(c))}</th>'
                   for c in table.columns)
    rows = []
    for i, (_, row) in enumerate(table.iterrows()):
        cells = []
        for column, value in row.items():
            if column == wrap:
                parts = _cell(value, digits).split("; ")
                cells.append(f"<td{WRAP}>{'<br>'.join(html.escape(t) for t in parts)}</td>")
                continue
            text = html.escape(_cell(value, digits))
            if not cells and links is not None and links[i]:
                text = f'<a href="{html.escape(links[i])}">{text}</a>'
            cells.append((TEXT_CELL if isinstance(value, str) else "<td>") + f"{text}</td>")
        klass = ' class="flag"' if flag_rows is not None and flag_rows[i] else ""
        rows.append(f"<tr{klass}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _cell(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if abs(value) >= 10 else f"{value:.3g}"
    return str(value)


def definition_list(items: Mapping[str, object]) -> str:
    return "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(_cell(v, 3))}</dd>"
                            for k, v in items.items()) + "</dl>"


def notes(messages: Iterable[str], empty: str) -> str:
    found = [f'<div class="warn">{html.escape(m)}</div>' for m in messages]
    return "".join(found) or f'<div class="ok">{html.escape(empty)}</div>'


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
            f"<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")
