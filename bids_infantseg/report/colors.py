"""Which colour each label has in every output: the ``dseg.tsv`` and the reports.

One function, ``output_labels``, decides; the label table and the report both take its
colours, so the legend of a report and the table beside its label maps never disagree
(the table once kept the model card's cortex #c83c3c while the report drew #ffd400).
"""

from __future__ import annotations

import colorsys
from dataclasses import replace
from itertools import count

from bids_infantseg.model.labels import LabelSet, builtin_twin, distinct_color

FAINT_SATURATION = 0.25
FAINT_VALUE = 0.3
"""Below either, a colour is grey, white or black: it vanishes on a greyscale MRI."""


def faint(color: str) -> bool:
    """Whether an outline of ``color`` would vanish on a greyscale image."""
    _, saturation, value = colorsys.rgb_to_hsv(*(c / 255 for c in rgb(color)))
    return saturation < FAINT_SATURATION or value < FAINT_VALUE


def display_colors(labels: LabelSet) -> dict[int, str]:
    """Label index -> ``#rrggbb``. A set equal to a built-in one (same indices and names)
    takes the built-in's colours, so a model card written before DrawEM9's palette (the
    bundled 0.4.0 card keeps beige white matter) is drawn and listed in the current one; any
    other set keeps its own. Then every faint colour (FreeSurfer's white matter #f5f5f5 and
    CSF #3c3c3c) becomes the next ``distinct_color`` no label uses, in class order, since it
    would vanish on a greyscale MRI."""
    source = builtin_twin(labels) or labels
    colors = {lab.index: lab.color for lab in source.labels}
    used = {c.lower() for c in colors.values()}
    spare = (c for c in map(distinct_color, count()) if c not in used)
    for lab in labels.labels:
        if lab.index != 0 and faint(colors[lab.index]):
            colors[lab.index] = next(spare)
    return colors


def output_labels(labels: LabelSet) -> LabelSet:
    """``labels`` with ``display_colors``: the set the output ``dseg.tsv`` lists and the
    reports draw. Only colours change, so ``same_classes`` still matches the model's set."""
    colors = display_colors(labels)
    return replace(labels, labels=tuple(replace(lab, color=colors[lab.index])
                                        for lab in labels.labels))


def rgb(color: str) -> tuple[int, int, int]:
    """``#rgb`` or ``#rrggbb`` as integers 0-255."""
    text = color.lstrip("#")
    if len(text) == 3:
        text = "".join(c * 2 for c in text)
    return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)
