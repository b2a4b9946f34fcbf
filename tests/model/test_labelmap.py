"""Label mappings: the shipped aseg -> DrawEM9 map, and the errors a map can give."""

from __future__ import annotations

import numpy as np
import pytest

from bids_infantseg.model.labelmap import LabelMapError, LabelMapping
from bids_infantseg.model.labels import DRAWEM9
from bids_infantseg.synth.classes import GEN_TO_DRAWEM9, INDEX
from bids_infantseg.synth.labelmaps import Scheme


def test_shipped_aseg_map_agrees_with_the_synthesis_scheme():
    """Training on real asegs and on images synthesised from asegs must mean the same."""
    mapping = LabelMapping.load("aseg-to-drawem9")
    scheme = {code: int(GEN_TO_DRAWEM9[INDEX[name]])
              for code, name in Scheme.load("freesurfer-aseg").classes}
    assert mapping.target == DRAWEM9
    assert dict(mapping.codes) == {0: 0, **scheme}


def test_aseg_codes_become_drawem9_indices():
    mapping = LabelMapping.load("aseg-to-drawem9")
    labels = np.array([[[0, 17, 53, 18, 14, 15, 24, 41, 2, 77, 85, 42, 4, 31, 172, 16, 49]]])
    assert mapping.apply(labels, "x").tolist() == \
        [[[0, 9, 9, 9, 1, 1, 1, 3, 3, 3, 3, 2, 5, 5, 6, 8, 7]]]


def test_a_code_the_mapping_lacks_is_one_line_naming_the_file_and_the_code():
    mapping = LabelMapping.load("aseg-to-drawem9")
    with pytest.raises(LabelMapError) as err:
        mapping.apply(np.array([[[0, 17, 1000, 99]]]), "sub-1_desc-aseg_dseg.nii.gz")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("sub-1_desc-aseg_dseg.nii.gz: label value(s) [99, 1000] ")


def test_a_mapping_file_needs_a_built_in_target_and_its_indices(tmp_path):
    own = tmp_path / "site-to-drawem9.tsv"
    own.write_text("source_index\tsource_name\ttarget_index\n0\tOut\t0\n7\tWM\t3\n")
    assert LabelMapping.load(own).codes == ((0, 0), (7, 3))
    own.write_text("source_index\tsource_name\ttarget_index\n7\tWM\t12\n")
    with pytest.raises(LabelMapError, match=r"not: \[12\]"):
        LabelMapping.load(own)
    with pytest.raises(LabelMapError, match="built-in target"):
        LabelMapping.load(own.rename(tmp_path / "site-to-other.tsv"))
    with pytest.raises(LabelMapError, match="shipped mapping.*aseg-to-drawem9"):
        LabelMapping.load("nope")
