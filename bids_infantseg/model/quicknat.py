"""QuickNAT (Guha Roy et al., NeuroImage 2019): a 2D fully convolutional segmentation net.

Four dense encoder blocks (each followed by max-pooling that remembers its indices), a dense
bottleneck, four dense decoder blocks (max-unpooling by the matching encoder's indices, then
concatenation with that encoder's output), and a 1x1 classifier. Optional channel/spatial
squeeze-and-excitation (Roy et al., 2018) recalibrates each block's output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class QuickNATConfig:
    """Architecture hyper-parameters, as stored in a model card; defaults are the paper's."""

    num_classes: int
    num_channels: int = 1
    num_filters: int = 64
    kernel_size: int = 5
    dropout: float = 0.1
    se_block: str = "none"  # none | cse | sse | csse

    def to_dict(self) -> dict:
        return asdict(self)


class SqueezeExcitation(nn.Module):
    """Channel (cSE), spatial (sSE) or both (csSE, max of the two) recalibration."""

    def __init__(self, channels: int, mode: str, reduction: int = 2) -> None:
        super().__init__()
        self.mode = mode
        if mode in ("cse", "csse"):
            self.channel_gate = nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Conv2d(channels, max(channels // reduction, 1), 1),
                nn.ReLU(inplace=True),
                nn.Conv2d(max(channels // reduction, 1), channels, 1),
                nn.Sigmoid(),
            )
        if mode in ("sse", "csse"):
            self.spatial_gate = nn.Sequential(nn.Conv2d(channels, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "cse":
            return x * self.channel_gate(x)
        if self.mode == "sse":
            return x * self.spatial_gate(x)
        return torch.maximum(x * self.channel_gate(x), x * self.spatial_gate(x))


class DenseBlock(nn.Module):
    """BN-PReLU-conv(k x k), twice with dense concatenation, then BN-PReLU-conv(1x1)."""

    def __init__(self, in_channels: int, cfg: QuickNATConfig) -> None:
        super().__init__()
        f, k = cfg.num_filters, cfg.kernel_size
        pad = k // 2
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, f, k, padding=pad)
        self.norm2 = nn.BatchNorm2d(in_channels + f)
        self.conv2 = nn.Conv2d(in_channels + f, f, k, padding=pad)
        self.norm3 = nn.BatchNorm2d(in_channels + 2 * f)
        self.conv3 = nn.Conv2d(in_channels + 2 * f, f, 1)
        self.act1, self.act2, self.act3 = nn.PReLU(), nn.PReLU(), nn.PReLU()
        self.se = SqueezeExcitation(f, cfg.se_block) if cfg.se_block != "none" else nn.Identity()
        self.dropout = nn.Dropout2d(cfg.dropout) if cfg.dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o1 = self.conv1(self.act1(self.norm1(x)))
        c1 = torch.cat((x, o1), dim=1)
        o2 = self.conv2(self.act2(self.norm2(c1)))
        c2 = torch.cat((x, o1, o2), dim=1)
        out = self.conv3(self.act3(self.norm3(c2)))
        return self.dropout(self.se(out))


class QuickNAT(nn.Module):
    """Maps a batch of slices ``(B, C, H, W)`` to class logits ``(B, K, H, W)``.

    H and W must be multiples of 16 (four 2x2 poolings).
    """

    def __init__(self, cfg: QuickNATConfig) -> None:
        super().__init__()
        self.cfg = cfg
        f = cfg.num_filters
        self.encoders = nn.ModuleList(
            [DenseBlock(cfg.num_channels if i == 0 else f, cfg) for i in range(4)]
        )
        self.pool = nn.MaxPool2d(2, stride=2, return_indices=True)
        self.bottleneck = DenseBlock(f, cfg)
        self.unpool = nn.MaxUnpool2d(2, stride=2)
        self.decoders = nn.ModuleList([DenseBlock(2 * f, cfg) for _ in range(4)])
        self.classifier = nn.Conv2d(f, cfg.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[tuple[torch.Tensor, torch.Tensor]] = []
        for encoder in self.encoders:
            x = encoder(x)
            pooled, indices = self.pool(x)
            skips.append((x, indices))
            x = pooled
        x = self.bottleneck(x)
        for decoder, (skip, indices) in zip(self.decoders, reversed(skips), strict=True):
            x = self.unpool(x, indices, output_size=skip.shape[-2:])
            x = decoder(torch.cat((x, skip), dim=1))
        return self.classifier(x)

    def replace_classifier(self, num_classes: int) -> None:
        """Transfer learning: a fresh 1x1 classifier for a new label set."""
        self.classifier = nn.Conv2d(self.cfg.num_filters, num_classes, 1)
        self.cfg = QuickNATConfig(**{**self.cfg.to_dict(), "num_classes": num_classes})
