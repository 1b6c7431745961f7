"""A compact U-Net encoder-decoder: each task builds its own (no shared backbone).

Three stride-2 stages of two 3x3 convolutions (BatchNorm-free: GroupNorm keeps batch-size-1 training
and eval identical), skip connections, bilinear upsampling. Input sizes need not be multiples of 8.
Runs on CPU at 64x208 and scales to 128x416 on a GPU.

Example:
    >>> net = CompactUNet(in_channels=3, out_channels=1, width=8)
    >>> net(torch.zeros(2, 3, 32, 96)).shape
    torch.Size([2, 1, 32, 96])
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    groups = 4 if cout % 4 == 0 else 1
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.ELU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.ELU(inplace=True),
    )


class CompactUNet(nn.Module):
    """U-Net with widths ``width * (1, 2, 4, 8)``.

    Args:
        in_channels: input channels (3 for RGB, 6 for an RGB pair).
        out_channels: channels of the dense head (B, out_channels, H, W).
        width: base channel count.

    ``bottleneck_channels`` is the coarsest feature width, for tasks that add a global head.
    """

    def __init__(self, *, in_channels: int, out_channels: int, width: int = 16) -> None:
        super().__init__()
        w = (width, 2 * width, 4 * width, 8 * width)
        self.enc0 = _block(in_channels, w[0])
        self.enc1 = _block(w[0], w[1])
        self.enc2 = _block(w[1], w[2])
        self.enc3 = _block(w[2], w[3])
        self.dec2 = _block(w[3] + w[2], w[2])
        self.dec1 = _block(w[2] + w[1], w[1])
        self.dec0 = _block(w[1] + w[0], w[0])
        self.head = nn.Conv2d(w[0], out_channels, 3, padding=1)
        self.bottleneck_channels = w[3]

    @staticmethod
    def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_bottleneck(x)[0]

    def forward_with_bottleneck(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense head (B, out, H, W) and the coarsest features (B, 8*width, H/8, W/8)."""
        e0 = self.enc0(x)                                    # (B, w0, H, W)
        e1 = self.enc1(F.avg_pool2d(e0, 2, ceil_mode=True))  # (B, w1, H/2, W/2)
        e2 = self.enc2(F.avg_pool2d(e1, 2, ceil_mode=True))  # (B, w2, H/4, W/4)
        e3 = self.enc3(F.avg_pool2d(e2, 2, ceil_mode=True))  # (B, w3, H/8, W/8)
        d2 = self.dec2(torch.cat([self._up(e3, e2), e2], 1))
        d1 = self.dec1(torch.cat([self._up(d2, e1), e1], 1))
        d0 = self.dec0(torch.cat([self._up(d1, e0), e0], 1))
        return self.head(d0), e3                             # (B, out, H, W)
