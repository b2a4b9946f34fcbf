import numpy as np
import pytest

from bids_infantseg.inference import DeviceError, predict, resolve_device
from bids_infantseg.model.card import load_model
from tests.model_factory import make_tiny_model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return load_model(make_tiny_model(tmp_path_factory.mktemp("model")))


def test_probabilities_sum_to_one(tiny_model):
    rng = np.random.default_rng(0)
    volume = np.zeros((32, 32, 32), np.float32)
    volume[8:24, 6:26, 10:22] = rng.random((16, 20, 12))
    probs = predict(tiny_model, volume, batch_size=5)
    assert probs.shape == (10, 32, 32, 32)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)


def test_empty_slices_are_outside_without_running_the_network(tiny_model):
    volume = np.zeros((32, 32, 32), np.float32)
    volume[10:20, 10:20, 10:20] = 1.0
    probs = predict(tiny_model, volume)
    # a voxel whose slices are empty in every view is class 0 ("Unknown") with certainty
    assert probs[0, 0, 0, 0] == pytest.approx(1.0)
    # a voxel inside the object got network output, not a certainty
    assert probs[0, 15, 15, 15] < 1.0


def test_views_are_weighted_as_the_card_says(tiny_model):
    rng = np.random.default_rng(1)
    volume = rng.random((32, 32, 32)).astype(np.float32)
    full = predict(tiny_model, volume)
    nets = dict(tiny_model.nets)
    try:
        singles = {}
        for view in nets:
            tiny_model.nets = {view: nets[view]}
            tiny_model.card.views = {view: 1.0}
            singles[view] = predict(tiny_model, volume)
    finally:
        tiny_model.nets = nets
        tiny_model.card.views = {v: 1.0 for v in nets}
    np.testing.assert_allclose(full, sum(singles.values()) / 3, atol=1e-5)


def test_wrong_grid_is_refused(tiny_model):
    with pytest.raises(ValueError, match="model grid"):
        predict(tiny_model, np.zeros((16, 32, 32), np.float32))


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(DeviceError):
        resolve_device("tpu")
