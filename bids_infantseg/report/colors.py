"""Which colour the reports draw each label in."""

from __future__ import annotations

from bids_infantseg.model.labels import BUILTIN, LabelSet


def display_colors(labels: LabelSet) -> dict[int, str]:
    """Label index -> ``#rrggbb``. A set equal to a built-in one (same indices and names)
    takes the built-in's high-contrast colours, so a model card written before them (the
    bundled 0.4.0 card keeps beige white matter) still draws readable outlines; any other
    set keeps its own colours (``LabelSet.from_records`` gave colourless rows distinct ones)."""
    names = [(lab.index, lab.name) for lab in labels.labels]
    for builtin in BUILTIN.values():
        if [(lab.index, lab.name) for lab in builtin.labels] == names:
            return {lab.index: lab.color for lab in builtin.labels}
    return {lab.index: lab.color for lab in labels.labels}


def rgb(color: str) -> tuple[int, int, int]:
    """``#rgb`` or ``#rrggbb`` as integers 0-255."""
    text = color.lstrip("#")
    if len(text) == 3:
        text = "".join(c * 2 for c in text)
    return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)
