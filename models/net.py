"""The network behind the shipped model (PyTorch; needed only for training).

Two small U-Nets in one ONNX graph, because a uro is only 16–36 px long at 0.5 mm/px:
a whole frame at full resolution is too slow, a whole frame at low resolution loses the uro.

* **finder** — the whole frame at a coarse scale (2 mm/px): background / scallop core /
  scallop edge. The edge class is what separates touching scallops into instances.
* **parts** — a batch of square crops, one per scallop, at a fine scale (0.75 mm/px):
  background / meat (mantle, gonad, gill) / adductor / uro.

Blocks are depthwise-separable convolutions (MobileNet-style) so both run in a few ms on
two CPU cores. Outputs are logits at the input's resolution.

Either stage may take a fourth input plane, the fluorescence image (docs/fluorescence.md): only
its first convolution widens, everything after it is the same network.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_bn_relu(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class SepConv(nn.Module):
    """Depthwise 3×3 then pointwise 1×1."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.dw = nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
        )
        self.pw = conv_bn_relu(cin, cout, k=1)

    def forward(self, x):
        return self.pw(self.dw(x))


class TinyUNet(nn.Module):
    """Encoder at 1/2…1/16, decoder back to 1/2, logits upsampled to the input size."""

    def __init__(self, n_classes: int, widths: tuple[int, int, int, int] = (16, 16, 32, 48), in_planes: int = 3):
        super().__init__()
        c1, c2, c3, c4 = widths
        self.stem = conv_bn_relu(in_planes, c1, stride=2)
        self.enc1 = nn.Sequential(SepConv(c1, c2, 2), SepConv(c2, c2))
        self.enc2 = nn.Sequential(SepConv(c2, c3, 2), SepConv(c3, c3))
        self.enc3 = nn.Sequential(SepConv(c3, c4, 2), SepConv(c4, c4), SepConv(c4, c4))
        self.dec2 = SepConv(c4 + c3, c3)
        self.dec1 = SepConv(c3 + c2, c2)
        self.dec0 = SepConv(c2 + c1, c1)
        self.head = nn.Conv2d(c1, n_classes, 1)

    @staticmethod
    def _up(a, like):
        # Inputs are multiples of 16, so every level is exactly half the one above: a constant
        # factor exports as a plain Resize, where a size taken from ``like`` makes onnxruntime
        # compute shapes (Shape/Slice/Concat) at run time. Same result either way.
        assert a.shape[-1] * 2 == like.shape[-1] and a.shape[-2] * 2 == like.shape[-2], (
            f"input sides must be multiples of 16, got {tuple(like.shape[-2:])} at this level"
        )
        return F.interpolate(a, scale_factor=2.0, mode="bilinear", align_corners=False)

    def forward(self, x):
        x0 = self.stem(x)
        x1 = self.enc1(x0)
        x2 = self.enc2(x1)
        x3 = self.enc3(x2)
        y = self.dec2(torch.cat([self._up(x3, x2), x2], 1))
        y = self.dec1(torch.cat([self._up(y, x1), x1], 1))
        y = self.dec0(torch.cat([self._up(y, x0), x0], 1))
        return self._up(self.head(y), x)


class ScallopNet(nn.Module):
    """finder(frame) and parts(crops) side by side; exported as one ONNX graph with two
    inputs. Either input may have batch size 0, so the runtime runs one stage at a time."""

    def __init__(
        self,
        finder_widths=(16, 16, 32, 48),
        parts_widths=(16, 16, 32, 48),
        n_finder: int = 3,
        n_parts: int = 4,
        finder_planes: int = 3,
        parts_planes: int = 3,
    ):
        super().__init__()
        self.finder = TinyUNet(n_finder, finder_widths, finder_planes)
        self.parts = TinyUNet(n_parts, parts_widths, parts_planes)

    @property
    def planes(self) -> tuple[int, int]:
        """Input planes of (finder, parts): 3 colour, 4 with the fluorescence channel."""
        return self.finder.stem[0].in_channels, self.parts.stem[0].in_channels

    def forward(self, frame, crops):
        return self.finder(frame), self.parts(crops)
