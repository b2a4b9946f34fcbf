import numpy as np
import pytest

from bids_infantseg.core import conform as cf
from bids_infantseg.core.conform import (
    Grid,
    conform,
    intensity_center,
    model_grid,
    resample,
    restore_labels,
    restore_probabilities,
)

INTENSITY = {"method": "percentile", "lower": 0.5, "upper": 99.5}
GRID = (96, 96, 96)


def _rotation(axis: int, degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    out = np.eye(4)
    out[i, i], out[i, j], out[j, i], out[j, j] = c, -s, s, c
    return out


def _oblique_affine() -> np.ndarray:
    """1.0 x 1.2 x 3.0 mm voxels, turned 20 degrees about x and about y, off-origin."""
    affine = _rotation(0, 20) @ _rotation(1, 20) @ np.diag([1.0, 1.2, 3.0, 1.0])
    shape = np.array(NATIVE_SHAPE)
    affine[:3, 3] = np.array([12.0, -7.0, 25.0]) - affine[:3, :3] @ (shape - 1) / 2
    return affine


NATIVE_SHAPE = (90, 76, 30)


def _world(shape, affine) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _shapes(shape, affine) -> np.ndarray:
    """Label map of three objects defined in world coordinates (mm) around (12, -7, 25)."""
    xyz = _world(shape, affine) - np.array([12.0, -7.0, 25.0])
    labels = np.zeros(shape, np.int16)
    labels[np.linalg.norm(xyz - [-12, 0, 0], axis=-1) < 16] = 1  # sphere, left
    box = (np.abs(xyz - [16, 6, 0]) < [8, 16, 12]).all(-1)
    labels[box] = 2  # box, right
    ellipsoid = (((xyz - [0, -18, 16]) / [22, 8, 7]) ** 2).sum(-1) < 1
    labels[ellipsoid] = 3
    return labels


def _image(labels) -> np.ndarray:
    """An image with a texture that varies inside each object (not flip-symmetric)."""
    grad = np.linspace(0.5, 1.5, labels.shape[0])[:, None, None]
    return (labels * 40.0 + 10.0 * (labels > 0) * grad).astype(np.float32)


def _one_hot_probs(labels, affine, grid, classes=4) -> np.ndarray:
    """Like a network's output: objects resampled, background the rest (sums to 1)."""
    objects = [resample((labels == k).astype(np.float32), affine, grid)
               for k in range(1, classes)]
    return np.stack([1 - sum(objects), *objects])


def _dice(a, b) -> float:
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _reorient(data, affine, perm, flips):
    """Same world image, other voxel order: transpose by ``perm``, then flip ``flips``."""
    out = np.transpose(data, perm)
    to_old = np.zeros((4, 4))
    to_old[3, 3] = 1
    for new_axis, old_axis in enumerate(perm):
        to_old[old_axis, new_axis] = 1
    out_affine = affine @ to_old
    for axis in flips:
        out = np.flip(out, axis)
        flip = np.eye(4)
        flip[axis, axis], flip[axis, 3] = -1, out.shape[axis] - 1
        out_affine = out_affine @ flip
    return np.ascontiguousarray(out), out_affine


@pytest.fixture(scope="module")
def scene():
    affine = _oblique_affine()
    labels = _shapes(NATIVE_SHAPE, affine)
    volume, grid = conform(_image(labels), affine, 1.0, GRID, intensity=INTENSITY)
    probs = _one_hot_probs(labels, affine, grid)
    restored = restore_labels(probs, grid, NATIVE_SHAPE, affine, [0, 1, 2, 3])
    return affine, labels, volume, grid, probs, restored


def test_model_grid_is_ras_isotropic_and_centred():
    affine = _oblique_affine()
    grid = model_grid(NATIVE_SHAPE, affine, 1.5, (64, 48, 32))
    assert grid.shape == (64, 48, 32)
    np.testing.assert_allclose(grid.affine[:3, :3], 1.5 * np.eye(3))
    centre = grid.affine @ [31.5, 23.5, 15.5, 1]
    np.testing.assert_allclose(centre[:3], [12.0, -7.0, 25.0], atol=1e-9)


def test_round_trip_keeps_shapes(scene):
    affine, labels, volume, grid, probs, restored = scene
    assert restored.shape == NATIVE_SHAPE and restored.dtype == np.int16
    assert volume.shape == GRID and volume.dtype == np.float32
    assert volume.min() >= 0.0 and volume.max() <= 1.0
    for k in (1, 2, 3):
        assert np.count_nonzero(labels == k) > 500
        assert _dice(restored == k, labels == k) > 0.9, k


def test_class_indices_and_outside_the_grid():
    affine = _oblique_affine()
    labels = _shapes(NATIVE_SHAPE, affine)
    small = model_grid(NATIVE_SHAPE, affine, 1.0, (32, 32, 32))  # misses the FOV's edges
    probs = _one_hot_probs(labels, affine, small)
    restored = restore_labels(probs, small, NATIVE_SHAPE, affine, [7, 1, 2, 3])
    world = _world(NATIVE_SHAPE, affine)
    voxel = (world - small.affine[:3, 3]) @ np.linalg.inv(small.affine[:3, :3]).T
    outside = ((voxel < -0.5) | (voxel > 31.5)).any(-1)
    assert outside.any()
    assert (restored[outside] == 7).all()
    assert set(np.unique(restored)) <= {7, 1, 2, 3}


def test_probabilities_agree_with_labels(scene):
    affine, _, _, grid, probs, restored = scene
    maps = list(restore_probabilities(probs, grid, NATIVE_SHAPE, affine))
    assert len(maps) == 4 and all(m.shape == NATIVE_SHAPE for m in maps)
    stacked = np.stack(maps)
    np.testing.assert_allclose(stacked.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(np.argmax(stacked, 0), restored)


def test_labels_are_resampled_only_near_the_foreground_yet_equal_resampling_everywhere(scene):
    affine, _, _, grid, probs, _ = scene
    target, matrix, _ = cf._native_target(grid, NATIVE_SHAPE, affine)
    box = cf._foreground_box(probs[0], matrix, target)
    assert np.prod([b.stop - b.start for b in box]) < 0.8 * np.prod(target)
    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 0.05, probs.shape).astype(np.float32)
    soft = (0.6 * probs + 0.1 + noise) / (1.0 + noise.sum(0))  # rims near 0.5, no ties
    everywhere = np.argmax(np.stack(list(restore_probabilities(soft, grid, NATIVE_SHAPE,
                                                               affine))), 0)
    np.testing.assert_array_equal(
        restore_labels(soft, grid, NATIVE_SHAPE, affine, [0, 1, 2, 3]), everywhere)
    background = np.zeros_like(probs)
    background[0] = 1.0
    assert cf._foreground_box(background[0], matrix, target) is None
    assert not restore_labels(background, grid, NATIVE_SHAPE, affine, [0, 1, 2, 3]).any()


@pytest.mark.parametrize("shift", [0.0, 0.3, 0.5])
def test_the_foreground_box_keeps_every_label_of_small_blocks(shift):
    """Axis-aligned grids, so the box is tight: small foreground blocks at the extremes of
    the foreground must keep every native label they give when resampled everywhere."""
    shape = (40, 36, 30)
    affine = np.diag([0.9, 1.0, 1.1, 1.0])
    affine[:3, 3] = shift
    grid = model_grid(shape, affine, 1.0, (32, 32, 32))
    probs = np.zeros((2, 32, 32, 32), np.float32)
    probs[0] = 1.0
    for x, y, z in [(3, 12, 20), (28, 15, 9), (10, 2, 14), (17, 29, 5), (12, 18, 1),
                    (20, 7, 29)]:
        probs[0, x:x + 2, y:y + 2, z:z + 2] = 0.2
        probs[1, x:x + 2, y:y + 2, z:z + 2] = 0.8
    everywhere = np.argmax(np.stack(list(restore_probabilities(probs, grid, shape, affine))),
                           0)
    assert everywhere.any()
    np.testing.assert_array_equal(restore_labels(probs, grid, shape, affine, [0, 1]),
                                  everywhere)


def test_slabs_and_class_groups_do_not_change_results(scene, monkeypatch):
    affine, labels, volume, grid, probs, restored = scene
    monkeypatch.setattr(cf, "SLAB_VOXELS", 50_000)
    monkeypatch.setattr(cf, "GROUP_BYTES", 4 * int(np.prod(GRID)))  # one class at a time
    again, _ = conform(_image(labels), affine, 1.0, GRID, intensity=INTENSITY)
    np.testing.assert_array_equal(again, volume)
    np.testing.assert_array_equal(
        restore_labels(probs.astype(np.float16), grid, NATIVE_SHAPE, affine, [0, 1, 2, 3]),
        restore_labels(probs, grid, NATIVE_SHAPE, affine, [0, 1, 2, 3]))
    np.testing.assert_array_equal(
        restore_labels(probs, grid, NATIVE_SHAPE, affine, [0, 1, 2, 3]), restored)


@pytest.mark.parametrize(("perm", "flips"), [
    ((0, 1, 2), (0,)),        # LR flipped in the header
    ((0, 1, 2), (0, 1)),      # LPS
    ((1, 2, 0), (0,)),        # PSR-ish
    ((2, 0, 1), (1, 2)),
])
def test_header_orientation_changes_nothing(scene, perm, flips):
    affine, labels, volume, grid, probs, restored = scene
    data, other_affine = _reorient(_image(labels), affine, perm, flips)
    other_volume, other_grid = conform(data, other_affine, 1.0, GRID, intensity=INTENSITY)
    np.testing.assert_allclose(other_grid.affine, grid.affine, atol=1e-9)
    np.testing.assert_allclose(other_volume, volume, atol=1e-5)
    expected, _ = _reorient(restored, affine, perm, flips)
    back = restore_labels(probs, grid, data.shape, other_affine, [0, 1, 2, 3])
    np.testing.assert_array_equal(back, expected)


def test_left_right_flip_is_not_a_swap(scene):
    affine, labels, _, grid, probs, restored = scene
    flipped, flipped_affine = _reorient(labels, affine, (0, 1, 2), (0,))
    back = restore_labels(probs, grid, flipped.shape, flipped_affine, [0, 1, 2, 3])
    np.testing.assert_array_equal(back, restored[::-1])
    # the sphere is on the left (x < 0 in the world) whatever the voxel order
    world = _world(flipped.shape, flipped_affine)
    assert world[back == 1][:, 0].mean() < world[back == 2][:, 0].mean()


def test_off_centre_head_stays_inside_with_intensity_center():
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    shape = (140, 140, 140)  # 210 mm field of view
    world = _world(shape, affine)
    head_centre = np.array([160.0, 150.0, 40.0])
    head = (np.linalg.norm(world - head_centre, axis=-1) < 40).astype(np.float32) * 100
    centre = intensity_center(head, affine)
    np.testing.assert_allclose(centre, head_centre, atol=1.0)
    grid_shape = (96, 96, 96)
    plain, _ = conform(head, affine, 1.0, grid_shape, intensity=INTENSITY)
    centred, _ = conform(head, affine, 1.0, grid_shape, intensity=INTENSITY,
                         center_world=centre)
    ball = 4 / 3 * np.pi * 40**3
    assert centred.sum() == pytest.approx(ball, rel=0.03)
    assert plain.sum() < 0.5 * ball
    for axis in range(3):
        assert not np.take(centred, [0, -1], axis=axis).any()


def test_rotation_gives_a_grid_aligned_in_template_space():
    affine = _oblique_affine()
    turn = _rotation(2, 30) @ _rotation(0, -10)
    turn[:3, 3] = [5.0, -3.0, 2.0]
    centre = np.array([12.0, -7.0, 25.0])
    grid = model_grid(NATIVE_SHAPE, affine, 1.0, GRID, center_world=centre, rotation=turn)
    aligned = turn @ grid.affine
    np.testing.assert_allclose(aligned[:3, :3], np.eye(3), atol=1e-12)
    np.testing.assert_allclose((aligned @ [47.5, 47.5, 47.5, 1])[:3],
                               (turn @ [*centre, 1])[:3], atol=1e-9)
    np.testing.assert_allclose((grid.affine @ [47.5, 47.5, 47.5, 1])[:3], centre, atol=1e-9)

    # a box that is axis-aligned in template space lands axis-aligned on the grid
    native_world = _world(NATIVE_SHAPE, affine)
    in_template = native_world @ turn[:3, :3].T + turn[:3, 3] - (turn @ [*centre, 1])[:3]
    box = (np.abs(in_template) < [20, 12, 8]).all(-1).astype(np.float32)
    volume, _ = conform(box, affine, 1.0, GRID, intensity=INTENSITY, center_world=centre,
                        rotation=turn)
    expected = np.zeros(GRID, bool)
    expected[28:68, 36:60, 40:56] = True
    assert _dice(volume > 0.5, expected) > 0.9


def test_rejects_bad_input(scene):
    affine, _, _, grid, probs, _ = scene
    with pytest.raises(ValueError, match="rigid"):
        model_grid(NATIVE_SHAPE, affine, 1.0, GRID, rotation=np.diag([2.0, 1, 1, 1]))
    with pytest.raises(ValueError, match="class indices"):
        restore_labels(probs, grid, NATIVE_SHAPE, affine, [0, 1])
    with pytest.raises(ValueError, match="do not fit"):
        restore_labels(probs[:, :10], grid, NATIVE_SHAPE, affine, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="no signal"):
        conform(np.zeros((20, 20, 20), np.float32), np.eye(4), 1.0, (16, 16, 16),
                intensity=INTENSITY, center_world=[500.0, 0, 0])
    with pytest.raises(ValueError, match="normalisation"):
        conform(np.ones((20, 20, 20), np.float32), np.eye(4), 1.0, (16, 16, 16),
                intensity={"method": "zscore"})


def test_intensity_percentiles_map_to_unit_range():
    grid = Grid((16, 16, 16), np.eye(4))
    data = np.zeros((16, 16, 16), np.float32)
    data[4:12, 4:12, 4:12] = np.linspace(100, 300, 512).reshape(8, 8, 8)
    out = cf.normalise_intensity(resample(data, np.eye(4), grid), INTENSITY)
    assert out.min() == 0 and out.max() == 1
    assert (out[data == 0] == 0).all()
    low, high = np.percentile(data[data > 0], [0.5, 99.5])
    assert out[8, 8, 8] == pytest.approx((data[8, 8, 8] - low) / (high - low), abs=1e-5)


def test_intensity_center_needs_signal():
    with pytest.raises(ValueError, match="no positive"):
        intensity_center(np.zeros((8, 8, 8), np.float32), np.eye(4))
