import numpy as np
import pytest

from bids_infantseg.core.volumes import brain_volume_mm3, label_volumes, voxel_volume_mm3
from bids_infantseg.model.labels import DRAWEM9

AFFINE = np.array([[0.0, 0.8, 0, 10], [-1.1, 0, 0, 5], [0, 0, 2.5, -3], [0, 0, 0, 1]])


def _labels() -> np.ndarray:
    rng = np.random.default_rng(0)
    labels = rng.choice([0, 1, 2, 3, 4, 5, 7], size=(20, 18, 12)).astype(np.int16)
    labels[0, 0, 0] = 9
    return labels


def test_volumes_add_up():
    labels = _labels()
    table = label_volumes(labels, AFFINE, DRAWEM9)
    voxel = 0.8 * 1.1 * 2.5
    assert voxel_volume_mm3(AFFINE) == pytest.approx(voxel)
    assert list(table.columns) == ["index", "name", "voxels", "volume_mm3"]
    assert list(table["index"]) == list(range(10))  # every label, absent ones included
    assert table.set_index("index").loc[[6, 8], "voxels"].tolist() == [0, 0]
    assert table.set_index("index").loc[9, "voxels"] == 1
    assert table["voxels"].sum() == labels.size
    assert table["volume_mm3"].sum() == pytest.approx(labels.size * voxel)
    non_background = table[table["index"] != 0]["volume_mm3"].sum()
    assert non_background == pytest.approx(np.count_nonzero(labels) * voxel)
    brain = brain_volume_mm3(table, DRAWEM9.brain_indices)
    assert brain == pytest.approx(np.isin(labels, DRAWEM9.brain_indices).sum() * voxel)


def test_float_label_maps_are_counted():
    labels = _labels()
    table = label_volumes(labels.astype(np.float32), AFFINE, DRAWEM9)
    assert table["voxels"].tolist() == label_volumes(labels, AFFINE, DRAWEM9)["voxels"].tolist()


@pytest.mark.parametrize("bad", [12, -1])
def test_unknown_labels_are_named(bad):
    labels = _labels()
    labels[1, 1, 1] = bad
    with pytest.raises(ValueError, match=rf"drawem9.*: {bad}$"):
        label_volumes(labels, AFFINE, DRAWEM9)


def test_non_integer_values_are_refused():
    with pytest.raises(ValueError, match="non-integer"):
        label_volumes(np.full((2, 2, 2), 0.5), AFFINE, DRAWEM9)
