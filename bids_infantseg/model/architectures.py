"""The networks a model card may name: ``architecture.type`` -> settings, builder, protocol.

A card stores its network as ``{"type": <name>, <settings>...}``; this registry turns that
into the settings dataclass and the torch module, and declares what training needs of the
network (its classifier, how to replace it for another label set, how to change its width),
so ``train/`` never names a network class. A second network type is one more entry here,
not a new card format or a new trainer. Cards written before the field existed mean QuickNAT.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from torch import nn

from bids_infantseg.model.quicknat import QuickNAT, QuickNATConfig
from bids_infantseg.utils.errors import InfantsegError

DEFAULT = "quicknat"
"""What a card without ``architecture.type`` holds (the only network before the registry)."""


class NetworkSettings(Protocol):
    """What every architecture's settings dataclass offers the card and the checks."""

    num_classes: int

    def to_dict(self) -> dict: ...


class UnknownArchitectureError(InfantsegError, ValueError):
    """A card names a network this version cannot build; one-line message."""


@dataclass(frozen=True)
class Architecture:
    """One registry entry: how cards spell it, its settings, how to build it."""

    name: str
    """As written in a card's ``architecture.type`` (looked up case-insensitively)."""
    settings: type
    """Dataclass of the card's settings (keyword arguments; ``to_dict`` writes them back)."""
    build: Callable[[Any], nn.Module]
    """Settings -> a freshly initialised network."""
    grid_multiple: int
    """Each side of the model grid must divide by this (the network's total pooling)."""
    feature_maps: Callable[[Any], int]
    """Settings -> feature maps held at once per input pixel at inference (memory planning)."""
    classifier: Callable[[nn.Module], nn.Module]
    """Network -> its last layer, the one stage I of transfer learning trains alone."""
    replace_classifier: Callable[[nn.Module, int], None]
    """(network, classes) -> a fresh classifier for another label set, the body kept."""
    with_width: Callable[[Any, int], Any]
    """(settings, filters) -> the same network with this many filters per layer."""


def _quicknat_classifier(net: nn.Module) -> nn.Module:
    return net.classifier


def _quicknat_replace_classifier(net: nn.Module, num_classes: int) -> None:
    net.replace_classifier(num_classes)


ARCHITECTURES: dict[str, Architecture] = {
    # dense blocks keep about 6 feature maps of num_filters at a level's resolution
    "quicknat": Architecture("QuickNAT", QuickNATConfig, QuickNAT, grid_multiple=16,
                             feature_maps=lambda settings: 6 * settings.num_filters,
                             classifier=_quicknat_classifier,
                             replace_classifier=_quicknat_replace_classifier,
                             with_width=lambda settings, filters: replace(
                                 settings, num_filters=filters)),
}


def architecture(name: str) -> Architecture:
    """The entry called ``name`` (any case); :class:`UnknownArchitectureError` otherwise."""
    try:
        return ARCHITECTURES[str(name).lower()]
    except KeyError:
        raise UnknownArchitectureError(
            f"unknown architecture {name!r} (known: {', '.join(sorted(ARCHITECTURES))})"
        ) from None


def architecture_of(settings: NetworkSettings) -> Architecture:
    """The entry whose settings class ``settings`` is."""
    for entry in ARCHITECTURES.values():
        if isinstance(settings, entry.settings):
            return entry
    raise UnknownArchitectureError(f"no architecture takes {type(settings).__name__} settings")


def settings_from_card(data: Mapping[str, Any]) -> NetworkSettings:
    """A card's ``architecture`` block -> its entry's settings (``type`` defaults to QuickNAT)."""
    entry = architecture(data.get("type", DEFAULT))
    return entry.settings(**{k: v for k, v in data.items() if k != "type"})


def settings_to_card(settings: NetworkSettings) -> dict[str, Any]:
    """The card's ``architecture`` block: ``type`` first, then the settings."""
    return {"type": architecture_of(settings).name, **settings.to_dict()}


def build_network(settings: NetworkSettings) -> nn.Module:
    """A new, untrained network of the kind and shape ``settings`` describe."""
    return architecture_of(settings).build(settings)
