"""One network, two label sets: a derived model sums its network's probabilities through a
label mapping before anything else sees them (the bundled DrawEM9 model is the aseg network
summed into DrawEM9 tissues)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_infantseg.cli.main import main
from bids_infantseg.core.inference import predict, predict_with_qc
from bids_infantseg.model.card import (
    WEIGHTS_FILE,
    ModelError,
    bundled_models_dir,
    load_model,
    load_network,
    read_card,
    resolve_model_path,
    save_model,
)
from bids_infantseg.model.labelmap import LabelMapping
from bids_infantseg.model.labels import ASEG, DRAWEM9
from bids_infantseg.train.engine import initial_net
from tests.conftest import write_head_dataset
from tests.model_factory import make_derived_model, make_tiny_model


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """(a tiny aseg network's folder, a DrawEM9 model derived from it beside it)."""
    root = tmp_path_factory.mktemp("derived")
    network = make_tiny_model(root / "aseg", labels=ASEG)
    return network, make_derived_model(root / "drawem9", "../aseg", "aseg-to-drawem9")


def summed(probs: np.ndarray) -> np.ndarray:
    """The aseg probabilities summed into DrawEM9 classes, straight from the mapping file."""
    mapping = dict(LabelMapping.load("aseg-to-drawem9").codes)
    out = np.zeros((len(DRAWEM9), *probs.shape[1:]), np.float64)
    for k, label in enumerate(ASEG.labels):
        out[DRAWEM9.indices.tolist().index(mapping[label.index])] += probs[k]
    return out


def test_drawem9_labels_are_the_argmax_of_the_summed_aseg_probabilities(models):
    network, derived = models
    rng = np.random.default_rng(0)
    volume = rng.random((32, 32, 32)).astype(np.float32)
    volume[:4] = 0  # empty slices: assigned to label 0 in both label sets
    aseg = summed(predict(load_model(network), volume))
    drawem9 = predict_with_qc(load_model(derived), volume)
    assert drawem9.probs.shape[0] == len(DRAWEM9)
    np.testing.assert_allclose(drawem9.probs, aseg, atol=1e-5)
    np.testing.assert_array_equal(drawem9.probs.argmax(0), aseg.argmax(0))
    assert set(np.unique(drawem9.view_labels["axial"])) <= set(range(len(DRAWEM9)))


def test_a_derived_card_reads_as_its_network_with_the_mapping_labels(models):
    network, derived = models
    card = read_card(derived)
    assert card.labels.name == "drawem9" and card.name == "tiny-derived"
    assert card.grid_shape == read_card(network).grid_shape
    assert card.derived.network_path == network.resolve()
    assert card.to_dict()["derived_from"] == {"network": "../aseg",
                                              "mapping": "aseg-to-drawem9"}
    assert not (derived / WEIGHTS_FILE).exists()
    record = load_model(derived).provenance()
    assert record["Network"]["Name"] == "tiny-test"
    assert record["Mapping"]["Name"] == "aseg-to-drawem9"
    assert record["SHA256"] != record["Network"]["SHA256"]  # the mapping is part of it


def test_training_starts_from_a_derived_models_network(models):
    network, derived = models
    init = load_network(derived)
    assert init.card.labels.name == "aseg" and init.path == network.resolve()
    net = initial_net(read_card(network), init, "axial", seed=0)
    assert net.state_dict().keys() == init.nets["axial"].state_dict().keys()


def test_a_derived_model_that_does_not_fit_is_one_line_naming_its_card(tmp_path, models):
    network, derived = models
    drawem9_net = make_tiny_model(tmp_path / "drawem9-net")
    wrong = make_derived_model(tmp_path / "wrong", drawem9_net, "aseg-to-drawem9")
    with pytest.raises(ModelError, match=r"wrong/card.json: mapping aseg-to-drawem9 .* does "
                                         r"not map every label of tiny-test \(drawem9\)"):
        load_model(wrong)
    chained = make_derived_model(tmp_path / "chained", derived, "aseg-to-drawem9")
    with pytest.raises(ModelError, match="is itself a derived model"):
        load_model(chained)
    missing = make_derived_model(tmp_path / "missing", network, "nope-to-drawem9")
    with pytest.raises(ModelError, match=r"missing/card.json: .*nope-to-drawem9"):
        load_model(missing)
    with pytest.raises(ModelError, match="no weights of its own"):
        save_model(tmp_path / "copy", read_card(derived), load_model(derived).nets)


def test_one_weights_file_is_bundled_and_drawem9_derives_from_it():
    weights = sorted(p.relative_to(bundled_models_dir()).as_posix()
                     for p in bundled_models_dir().rglob(WEIGHTS_FILE))
    assert weights == [f"aseg-synth-starter/{WEIGHTS_FILE}"]
    card = read_card(resolve_model_path("default"))
    assert card.labels.name == "drawem9" and card.name == "drawem9-synth-starter"
    assert card.derived.network.name == "aseg-synth-starter"
    assert card.derived.mapping.name == "aseg-to-drawem9"



def test_a_participant_run_writes_drawem9_and_records_network_and_mapping(tmp_path, models):
    network, derived = models
    bids = write_head_dataset(tmp_path / "bids")
    out = tmp_path / "out"
    assert main([str(bids), str(out), "participant", "--model", str(derived),
                 "--participant-label", "02", "--nprocs", "1", "--device", "cpu",
                 "--write-probseg"]) == 0
    anat = out / "sub-02" / "anat"
    dseg = anat / "sub-02_run-1_space-T2w_desc-drawem9_dseg.nii.gz"
    assert set(np.unique(np.asanyarray(nib.load(dseg).dataobj))) <= set(DRAWEM9.indices)
    probsegs = sorted(anat.glob("sub-02_run-1_space-T2w_label-*_probseg.nii.gz"))
    assert len(probsegs) == len(DRAWEM9)
    weights = load_model(network).sha256
    for sidecar in (dseg.with_name(dseg.name.replace(".nii.gz", ".json")),
                    probsegs[0].with_name(probsegs[0].name.replace(".nii.gz", ".json"))):
        model = json.loads(sidecar.read_text())["Model"]
        assert model["Name"] == "tiny-derived" and model["SHA256"] == load_model(derived).sha256
        assert model["Network"] == {"Name": "tiny-test", "Version": "0.0.1", "SHA256": weights}
        assert model["Mapping"]["Name"] == "aseg-to-drawem9"
