import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

from bids_infantseg.core import inference, refine
from bids_infantseg.core.inference import (
    COMPILE_COST_S,
    COMPILE_SAVING,
    DeviceError,
    Placement,
    _worth_compiling,
    fallback_placements,
    predict,
    predict_with_qc,
    resolve_device,
    shared_model,
)
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


def _head(shape=(32, 32, 32), seed=0) -> np.ndarray:
    """A random 'head' inside an empty border, so some slices of every view are skipped."""
    rng = np.random.default_rng(seed)
    volume = np.zeros(shape, np.float32)
    volume[4:28, 6:26, 3:30] = rng.random((24, 20, 27))
    return volume


class _OutOfMemoryAbove(torch.nn.Module):
    """Wraps a network; raises the CUDA out-of-memory error for batches above ``limit``, and
    for every batch during its first ``failures`` calls."""

    def __init__(self, net: torch.nn.Module, limit: int, failures: int = 0) -> None:
        super().__init__()
        self.net, self.limit, self.failures = net, limit, failures
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        if self.failures > 0 or x.shape[0] > self.limit:
            self.failures -= 1
            raise torch.OutOfMemoryError("fake: CUDA out of memory")
        return self.net(x)


@pytest.fixture
def oom_model(tmp_path):
    return load_model(make_tiny_model(tmp_path / "model"))


def test_out_of_memory_halves_the_batch_and_gives_the_same_result(oom_model, caplog):
    volume = _head()
    expected = predict(oom_model, volume, batch_size=8)
    oom_model.nets = {v: _OutOfMemoryAbove(n, limit=2) for v, n in oom_model.nets.items()}
    with caplog.at_level(logging.WARNING, logger="bids_infantseg"):
        probs = predict(oom_model, volume, batch_size=8)
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    first = next(iter(oom_model.nets.values())).batches
    assert first[:3] == [8, 4, 2] and max(first[3:]) <= 2
    assert "batch size halved to 2" in caplog.text


def test_out_of_memory_at_batch_one_moves_to_the_next_placement(oom_model, monkeypatch, caplog):
    volume = _head()
    expected = predict(oom_model, volume, batch_size=4)
    cpu = torch.device("cpu")
    monkeypatch.setattr(inference, "fallback_placements",
                        lambda device: [Placement(cpu, cpu), Placement(cpu, cpu)])
    view = next(iter(oom_model.nets))
    oom_model.nets[view] = _OutOfMemoryAbove(oom_model.nets[view], limit=4, failures=3)
    with caplog.at_level(logging.WARNING, logger="bids_infantseg"):
        probs = predict(oom_model, volume, batch_size=4)
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    assert oom_model.nets[view].batches[:3] == [4, 2, 1]
    assert "retrying with the network on cpu" in caplog.text


def test_out_of_memory_on_the_last_placement_is_raised(oom_model):
    oom_model.nets = {v: _OutOfMemoryAbove(n, limit=0) for v, n in oom_model.nets.items()}
    with pytest.raises(torch.OutOfMemoryError):
        predict(oom_model, _head(), batch_size=2)


def test_gpu_placements_fall_back_to_host_probabilities_then_cpu():
    cpu, gpu = torch.device("cpu"), torch.device("cuda:0")
    assert fallback_placements(cpu) == [Placement(cpu, cpu)]
    assert fallback_placements(gpu) == [Placement(gpu, gpu), Placement(gpu, cpu),
                                        Placement(cpu, cpu)]


def test_float16_result_is_the_rounded_float32_result(tiny_model):
    volume = _head()
    full = predict(tiny_model, volume)
    half = predict(tiny_model, volume, dtype=torch.float16)
    assert half.dtype == np.float16
    np.testing.assert_array_equal(half, full.astype(np.float16))


@pytest.mark.parametrize(("ahead", "spent", "expected"), [
    (1.0, 0.0, False),  # one small scan: the compile would cost more than it saves
    (COMPILE_COST_S / COMPILE_SAVING, 0.0, True),  # this scan alone repays it
    (1.0, 0.99 * COMPILE_COST_S / COMPILE_SAVING, False),  # not yet forgone the cost
    (1.0, COMPILE_COST_S / COMPILE_SAVING, True),  # staying eager has cost as much as compiling
])
def test_compiling_is_worth_it_only_when_it_pays(ahead, spent, expected):
    assert _worth_compiling(ahead, spent) is expected


def test_auto_compiles_once_staying_eager_has_cost_a_compile(oom_model, monkeypatch):
    compiled: list[tuple] = []

    def fake_compiled(net, place, batch_size, shape):
        compiled.append((batch_size, shape))
        return net

    monkeypatch.setattr(inference, "_compiled", fake_compiled)
    monkeypatch.setattr(inference, "COMPILE_COST_S", 1e9)
    monkeypatch.setattr(inference._Process, "eager_seconds", 0.0)
    predict(oom_model, _head(), batch_size=4, compile="auto")
    assert compiled == []
    assert inference._Process.eager_seconds > 0
    monkeypatch.setattr(inference._Process, "eager_seconds", 1e9 / inference.COMPILE_SAVING)
    predict(oom_model, _head(), batch_size=4, compile="auto")
    assert compiled and compiled[0] == (4, (32, 32))


def test_never_compile_and_mc_dropout_do_not_use_a_compiled_network(oom_model, monkeypatch):
    def refuse(*args):
        raise AssertionError("compiled although told not to")

    monkeypatch.setattr(inference, "_compiled", refuse)
    monkeypatch.setattr(inference._Process, "eager_seconds", 1e9)
    predict(oom_model, _head(), compile="never")
    predict_with_qc(oom_model, _head(), mc_samples=1)


def test_shared_model_is_loaded_once_per_weights_file(tmp_path):
    folder = make_tiny_model(tmp_path / "model")
    first = shared_model(folder)
    assert shared_model(folder) is first
    make_tiny_model(folder, seed=1)  # new weights in the same folder: a new model
    second = shared_model(folder)
    assert second is not first and second.sha256 != first.sha256


@pytest.mark.slow
def test_compiled_network_agrees_with_eager_and_compiles_once(oom_model, monkeypatch):
    """Frozen weights fold batch norm into the convolutions: probabilities within 1e-4,
    label maps on at least 99.9% of voxels (ties of near-equal classes may flip)."""
    volume = _head()
    eager = predict(oom_model, volume, batch_size=5)
    compiled = predict(oom_model, volume, batch_size=5, compile="always")
    np.testing.assert_allclose(compiled, eager, atol=1e-4)
    assert (compiled.argmax(0) == eager.argmax(0)).mean() >= 0.999
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("compiled twice"))
    again = predict(oom_model, volume, batch_size=5, compile="always")
    np.testing.assert_array_equal(again, compiled)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_matches_cpu_under_autocast(tiny_model):
    """bf16/fp16 autocast: probabilities within 0.05, labels on at least 99% of voxels."""
    volume = _head()
    cpu = predict(tiny_model, volume)
    gpu = predict(tiny_model, volume, device="cuda")
    assert gpu.dtype == np.float32
    np.testing.assert_allclose(gpu, cpu, atol=0.05)
    assert (gpu.argmax(0) == cpu.argmax(0)).mean() >= 0.99


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_qc_and_float16_transfer(tmp_path):
    model = shared_model(make_tiny_model(tmp_path / "model"), device="cuda")
    result = predict_with_qc(model, _head(), device="cuda", dtype=torch.float16, mc_samples=1)
    assert result.probs.dtype == np.float16
    assert set(result.view_labels) == set(model.nets)
    assert result.entropy.shape == (32, 32, 32)
    assert next(model.nets["axial"].parameters()).is_cuda


class _OutOfMemoryOnGpu(torch.nn.Module):
    """Wraps a network; raises the CUDA out-of-memory error whenever it runs on a GPU."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            raise torch.OutOfMemoryError("fake: CUDA out of memory")
        return self.net(x)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_out_of_memory_falls_back_to_the_cpu(tmp_path, caplog):
    model = shared_model(make_tiny_model(tmp_path / "model"), device="cuda")
    expected = predict(model, _head())
    model.nets = {v: _OutOfMemoryOnGpu(n) for v, n in model.nets.items()}
    with caplog.at_level(logging.WARNING, logger="bids_infantseg"):
        probs = predict(model, _head(), device="cuda", batch_size=4)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert caplog.text.count("retrying with the network on") == 2
    assert next(model.nets["axial"].parameters()).is_cuda  # the shared model stays on the GPU


def _counting(net: torch.nn.Module, calls: list[int]) -> torch.nn.Module:
    net.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    return net


def test_flip_averages_each_view_with_its_mirror_image(tmp_path):
    model = load_model(make_tiny_model(tmp_path / "model", views={"axial": 1.0, "coronal": 2.0}))
    volume = _head()
    plain = predict_with_qc(model, volume).probs
    mirror = predict_with_qc(model, np.ascontiguousarray(volume[::-1])).probs[:, ::-1]
    flipped = predict_with_qc(model, volume, flip=True)
    np.testing.assert_allclose(flipped.probs, (plain + mirror) / 2, atol=1e-5)
    assert np.abs(flipped.probs - plain).max() > 0.01  # the untrained network is not symmetric
    assert (flipped.probs.argmax(0) != plain.argmax(0)).any()
    # view labels stay those of the unmirrored slices
    for view, labels in predict_with_qc(model, volume).view_labels.items():
        np.testing.assert_array_equal(flipped.view_labels[view], labels)


def test_flip_does_not_run_the_sagittal_view_twice(tmp_path):
    """A sagittal slice's mirror image is another sagittal slice: same prediction."""
    model = load_model(make_tiny_model(tmp_path / "model", views={"sagittal": 1.0}))
    calls: list[int] = []
    _counting(model.nets["sagittal"], calls)
    volume = _head()
    plain = predict_with_qc(model, volume).probs
    slices = sum(calls)
    mirror = predict_with_qc(model, np.ascontiguousarray(volume[::-1])).probs[:, ::-1]
    np.testing.assert_allclose(mirror, plain, atol=1e-5)
    calls.clear()
    np.testing.assert_array_equal(predict_with_qc(model, volume, flip=True).probs, plain)
    assert sum(calls) == slices


def test_flip_swaps_lateralised_classes(tmp_path):
    model = load_model(make_tiny_model(tmp_path / "model", views={"axial": 1.0}))
    labels = list(model.card.labels.labels)
    labels[2] = replace(labels[2], name="Left-Thing")
    labels[3] = replace(labels[3], name="Right-Thing")
    model.card.labels = replace(model.card.labels, labels=tuple(labels))
    volume = _head()
    plain = predict_with_qc(model, volume).probs
    mirror = predict_with_qc(model, np.ascontiguousarray(volume[::-1])).probs[:, ::-1]
    mirror[[2, 3]] = mirror[[3, 2]]
    np.testing.assert_allclose(predict_with_qc(model, volume, flip=True).probs,
                               (plain + mirror) / 2, atol=1e-5)


def test_refinements_follow_the_network_in_order(tiny_model):
    volume = _head()
    labels = tiny_model.card.labels
    plain = predict_with_qc(tiny_model, volume)
    em, _ = refine.refine_em(volume, plain.probs, refine.brain_classes(labels))
    both, _ = refine.refine_ventricles(em, refine.fluid_classes(labels))
    result = predict_with_qc(tiny_model, volume, refine_em=True, refine_ventricles=True)
    np.testing.assert_allclose(result.probs, both, atol=1e-6)
    assert np.abs(em - plain.probs).max() > 0.01  # the refinement did something
    half = predict_with_qc(tiny_model, volume, refine_em=True, dtype=torch.float16)
    assert half.probs.dtype == np.float16
    np.testing.assert_allclose(half.probs, em, atol=1e-3)
    for view, view_labels in plain.view_labels.items():
        np.testing.assert_array_equal(result.view_labels[view], view_labels)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_flip_and_refinements_match_the_cpu(tmp_path):
    model = shared_model(make_tiny_model(tmp_path / "model"), device="cuda")
    options = {"flip": True, "refine_em": True, "refine_ventricles": True}
    gpu = predict_with_qc(model, _head(), device="cuda", dtype=torch.float16, **options)
    cpu = predict_with_qc(model, _head(), **options)
    assert gpu.probs.dtype == np.float16
    np.testing.assert_allclose(gpu.probs, cpu.probs, atol=0.05)
    assert (gpu.probs.argmax(0) == cpu.probs.argmax(0)).mean() >= 0.99


def _sided(model) -> None:
    labels = list(model.card.labels.labels)
    labels[2] = replace(labels[2], name="Left-Thing")
    labels[3] = replace(labels[3], name="Right-Thing")
    model.card.labels = replace(model.card.labels, labels=tuple(labels))


def test_sagittal_pair_mass_is_split_by_the_other_views(tmp_path):
    """A sagittal slice cannot tell sides: its left+right mass follows the other views' ratio,
    whatever the order of the card's views; everything else is a plain weighted mean."""
    model = load_model(make_tiny_model(tmp_path / "model",
                                       views={"sagittal": 2.0, "axial": 1.0}))
    _sided(model)
    volume = _head()
    nets = dict(model.nets)
    singles = {}
    for view in nets:
        model.nets, model.card.views = {view: nets[view]}, {view: 1.0}
        singles[view] = predict_with_qc(model, volume).probs
    model.nets, model.card.views = nets, {"sagittal": 2.0, "axial": 1.0}
    full = predict_with_qc(model, volume)
    sag, ax = singles["sagittal"], singles["axial"]
    expected = (2 * sag + ax) / 3
    share = (ax[2] / 3 + 1e-6) / ((ax[2] + ax[3]) / 3 + 2e-6)  # the accumulator's terms
    expected[2] = (2 * (sag[2] + sag[3]) * share + ax[2]) / 3
    expected[3] = (2 * (sag[2] + sag[3]) * (1 - share) + ax[3]) / 3
    np.testing.assert_allclose(full.probs, expected, atol=1e-4)
    np.testing.assert_allclose(full.probs.sum(0), 1, atol=1e-4)
    assert np.abs(full.probs[2] - (2 * sag[2] + ax[2]) / 3).max() > 0.01  # it did change
    # a sagittal-only model has nothing to split by: its probabilities stay its own
    model.nets, model.card.views = {"sagittal": nets["sagittal"]}, {"sagittal": 1.0}
    np.testing.assert_allclose(predict_with_qc(model, volume).probs, sag, atol=1e-6)
