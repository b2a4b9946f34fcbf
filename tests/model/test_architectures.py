"""The architecture registry: cards name their network; old cards mean QuickNAT; a new
network type is one registry entry."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from bids_infantseg.model import architectures
from bids_infantseg.model.architectures import (
    Architecture,
    UnknownArchitectureError,
    architecture,
    build_network,
)
from bids_infantseg.model.card import (
    CARD_FILE,
    ModelError,
    bundled_models_dir,
    load_model,
    read_card,
    save_model,
)
from bids_infantseg.model.quicknat import QuickNAT, QuickNATConfig
from bids_infantseg.workflows.infantseg import inference_mem_gb
from tests.model_factory import make_tiny_model, tiny_card


def test_the_bundled_card_is_quicknat():
    card = read_card(bundled_models_dir() / "aseg-synth-starter")
    assert isinstance(card.architecture, QuickNATConfig)
    assert card.to_dict()["architecture"]["type"] == "QuickNAT"
    assert isinstance(build_network(card.architecture), QuickNAT)


def test_lookup_ignores_case_and_an_unknown_name_lists_the_known():
    assert architecture("QuickNAT") is architecture("quicknat")
    with pytest.raises(UnknownArchitectureError, match=r"unknown architecture 'unet' "
                                                       r"\(known: quicknat\)"):
        architecture("unet")


def test_a_card_without_a_type_is_quicknat(tmp_path):
    folder = make_tiny_model(tmp_path / "m")
    card = json.loads((folder / CARD_FILE).read_text())
    del card["architecture"]["type"]
    (folder / CARD_FILE).write_text(json.dumps(card))
    model = load_model(folder)
    assert all(isinstance(net, QuickNAT) for net in model.nets.values())


def test_an_unknown_architecture_is_one_line_naming_the_card(tmp_path):
    folder = make_tiny_model(tmp_path / "m")
    card = json.loads((folder / CARD_FILE).read_text())
    card["architecture"]["type"] = "SegFormer"
    (folder / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelError) as info:
        load_model(folder)
    message = str(info.value)
    assert "\n" not in message
    assert message == (f"{folder / CARD_FILE}: unknown architecture 'SegFormer' "
                       "(known: quicknat)")


@dataclasses.dataclass(frozen=True)
class _TinyConfig:
    num_classes: int
    width: int = 3

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _Tiny(nn.Module):
    def __init__(self, cfg: _TinyConfig) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, cfg.num_classes, cfg.width, padding=cfg.width // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_a_second_network_is_a_registry_entry_not_a_format_change(tmp_path, monkeypatch):
    monkeypatch.setitem(architectures.ARCHITECTURES, "tiny",
                        Architecture("Tiny", _TinyConfig, _Tiny, grid_multiple=1,
                                     feature_maps=lambda settings: settings.num_classes,
                                     classifier=lambda net: net.conv,
                                     replace_classifier=lambda net, k: None,
                                     with_width=lambda settings, width: settings))
    card = dataclasses.replace(tiny_card(views={"axial": 1.0}),
                               architecture=_TinyConfig(num_classes=10))
    save_model(tmp_path, card, {"axial": _Tiny(card.architecture)})
    written = json.loads((tmp_path / CARD_FILE).read_text())["architecture"]
    assert written == {"type": "Tiny", "num_classes": 10, "width": 3}
    model = load_model(tmp_path)
    assert isinstance(model.nets["axial"], _Tiny)
    assert model.card.architecture == _TinyConfig(num_classes=10)
    # memory planning asks the entry, not QuickNAT's settings (the tiny one has no filters)
    assert inference_mem_gb(model.card) >= 0.5
