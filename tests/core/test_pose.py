import numpy as np
import pytest

from bids_infantseg.core.pose import (
    FALLBACK,
    PoseResult,
    load_transform,
    rigid_to_template,
    rotation_angle_deg,
    save_transform,
)
from tests.templateflow_home import build_templateflow_home, synthetic_head

# A scanner-like grid: 2 mm voxels stored left-inferior-anterior, not RAS.
NATIVE_AFFINE = np.array(
    [[-2.0, 0.0, 0.0, 110.0], [0.0, 0.0, 2.0, -120.0], [0.0, -2.0, 0.0, 100.0], [0, 0, 0, 1.0]]
)
NATIVE_SHAPE = (100, 110, 100)
HEAD_POINTS = np.array([[x, y, z] for x in (-40, 40) for y in (-75, 40) for z in (-40, 50)])


def rigid(degrees: float, axis, translation) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = np.radians(degrees)
    matrix = np.eye(4)
    matrix[:3, :3] = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    matrix[:3, 3] = translation
    return matrix


def scan(head_pose: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    clean = synthetic_head(NATIVE_SHAPE, NATIVE_AFFINE, pose=head_pose)
    return (400.0 * clean + rng.normal(0.0, 12.0, NATIVE_SHAPE)).astype(np.float32)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    home = build_templateflow_home(tmp_path_factory.mktemp("tf"), cohorts=(1,))
    return home / "tpl-MNIInfant/cohort-1/tpl-MNIInfant_cohort-1_res-1_T2w.nii.gz"


@pytest.mark.parametrize(
    ("degrees", "axis", "translation"),
    [(18.0, (1.0, 0.5, 0.3), (8.0, -5.0, 12.0)), (-16.0, (0.2, 1.0, 0.0), (-6.0, 10.0, 3.0))],
)
def test_known_pose_is_recovered(template, degrees, axis, translation):
    head_pose = rigid(degrees, axis, translation)  # template world -> native world
    result = rigid_to_template(scan(head_pose), NATIVE_AFFINE, template)
    assert result.accepted, result.message
    residual = result.transform @ head_pose  # identity when native -> template is exact
    assert rotation_angle_deg(residual) < 3.0
    moved = HEAD_POINTS @ residual[:3, :3].T + residual[:3, 3]
    assert np.linalg.norm(moved - HEAD_POINTS, axis=1).max() < 2.0


def test_noise_falls_back_to_header(template):
    noise = np.random.default_rng(1).random((60, 60, 60)).astype(np.float32)
    result = rigid_to_template(noise, NATIVE_AFFINE, template)
    assert not result.accepted
    assert FALLBACK in result.message
    np.testing.assert_array_equal(result.transform, np.eye(4))


def test_implausible_rotation_falls_back(template):
    result = rigid_to_template(scan(rigid(90.0, (1, 0, 0), (0, 0, 0))), NATIVE_AFFINE, template)
    assert not result.accepted
    assert FALLBACK in result.message
    np.testing.assert_array_equal(result.transform, np.eye(4))


@pytest.mark.parametrize("metric", [0.62, float("nan")])
def test_transform_round_trips_through_json(tmp_path, metric):
    result = PoseResult(rigid(12.0, (0, 0, 1), (1.0, 2.0, 3.0)), True, metric, "aligned")
    save_transform(result, tmp_path / "pose.json")
    loaded = load_transform(tmp_path / "pose.json")
    np.testing.assert_array_equal(loaded.transform, result.transform)
    assert loaded.accepted and loaded.message == "aligned"
    np.testing.assert_equal(loaded.metric, metric)
