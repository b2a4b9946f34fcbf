import json
import os
import stat

import pytest
import torch

from bids_infantseg.model.card import (
    WEIGHTS_FILE,
    ModelError,
    load_model,
    read_card,
    resolve_model_path,
    save_model,
    sha256_file,
)
from bids_infantseg.model.quicknat import QuickNAT
from tests.model_factory import make_tiny_model, tiny_card


def test_round_trip_keeps_weights_and_card(tmp_path):
    folder = make_tiny_model(tmp_path / "m", seed=3)
    model = load_model(folder)
    torch.manual_seed(3)
    reference = {v: QuickNAT(model.card.architecture) for v in ("axial", "coronal", "sagittal")}
    for view, net in model.nets.items():
        for key, value in reference[view].state_dict().items():
            if not key.startswith("classifier"):  # the factory sharpens the classifier
                assert torch.equal(net.state_dict()[key], value), (view, key)
    assert model.card.labels.name == "drawem9"
    assert len(model.sha256) == 64


def test_float16_weights_are_loaded_as_float32(tmp_path):
    card = tiny_card(views={"axial": 1.0})
    card.weights_dtype = "float16"
    save_model(tmp_path, card, {"axial": QuickNAT(card.architecture)})
    model = load_model(tmp_path)
    assert all(p.dtype == torch.float32 for p in model.nets["axial"].parameters())


def test_weights_that_do_not_fit_the_card_are_a_clear_error(tmp_path):
    folder = make_tiny_model(tmp_path / "m")
    card = json.loads((folder / "card.json").read_text())
    card["architecture"]["num_filters"] = 8
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="do not match"):
        load_model(folder)


def test_unknown_model_name_lists_what_exists(tmp_path):
    with pytest.raises(ModelError, match="no such model folder"):
        resolve_model_path(tmp_path / "nope")


def test_weights_are_safetensors_not_pickle(tmp_path):
    folder = make_tiny_model(tmp_path / "m")
    header = (folder / WEIGHTS_FILE).read_bytes()[:16]
    assert not header.startswith(b"\x80")  # pickle protocol marker
    assert not header.startswith(b"PK")  # torch.save zip archive


def test_one_network_shared_by_views_is_saved_once_per_view(tmp_path):
    card = tiny_card()
    net = QuickNAT(card.architecture)
    save_model(tmp_path, card, dict.fromkeys(card.views, net))  # safetensors refuses shared memory
    model = load_model(tmp_path)
    reference = net.state_dict()
    for view in card.views:
        assert all(torch.equal(model.nets[view].state_dict()[k], v) for k, v in reference.items())


def test_model_files_are_readable_by_everyone(tmp_path):
    old = os.umask(0o077)
    try:
        folder = make_tiny_model(tmp_path / "m")
    finally:
        os.umask(old)
    for name in ("card.json", WEIGHTS_FILE):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o644


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _change_header_byte(path):
    data = bytearray(path.read_bytes())
    data[8] ^= 0x41  # the header's first character: its JSON no longer parses
    path.write_bytes(bytes(data))


def _change_weight_byte(path):
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x41  # a weight: the file still parses, only the checksum tells
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage,reason", [
    (_truncate, r"not a usable weights file: truncated \(\d+ of \d+ bytes\)"),
    (_change_header_byte, r"not a usable weights file: damaged header \(invalid JSON"),
    (_change_weight_byte, r"damaged, or not this model's weights: its SHA-256 \w+\.\.\. "
                          r"differs from \w+\.\.\. in card\.json"),
])
def test_a_damaged_weights_file_is_one_model_error_naming_it(tmp_path, damage, reason):
    folder = make_tiny_model(tmp_path / "m")
    damage(folder / WEIGHTS_FILE)
    with pytest.raises(ModelError, match=f"^{folder / WEIGHTS_FILE}: {reason}") as raised:
        load_model(folder)
    assert "\n" not in str(raised.value)


def test_the_card_records_the_weights_checksum_and_older_cards_without_it_still_load(tmp_path):
    folder = make_tiny_model(tmp_path / "m")
    card = json.loads((folder / "card.json").read_text())
    model = load_model(folder)
    assert card["weights"]["sha256"] == model.sha256 == sha256_file(folder / WEIGHTS_FILE)
    del card["weights"]["sha256"]
    (folder / "card.json").write_text(json.dumps(card))
    assert load_model(folder).card.weights_sha256 == ""


@pytest.mark.parametrize("name", ["drawem9-synth-starter", "aseg-synth-starter"])
def test_bundled_cards_record_their_weights_checksum(name):
    card = read_card(resolve_model_path(name))
    folder = card.derived.network_path if card.derived else resolve_model_path(name)
    assert card.weights_sha256 == sha256_file(folder / WEIGHTS_FILE)
