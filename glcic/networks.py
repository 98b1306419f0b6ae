"""The networks of Iizuka, Simo-Serra and Ishikawa (2017), exactly as the paper's tables give them.

The completion network is kept as one flat `nn.Sequential` (conv, BN, ReLU, conv, BN, ReLU, ...,
conv, sigmoid) because that is also the layout of the authors' released Torch7 model, so weights
map module by module and a reader can check the structure against the paper's table at a glance.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

#: Mean colour of Places2, which the paper's released models subtract from their input.
PLACES2_MEAN: tuple[float, float, float] = (0.4560, 0.4472, 0.4155)

#: Sides of a completion network input must be multiples of this (two stride-2 stages).
SIDE_MULTIPLE = 4

#: How far, in input pixels, an output pixel's receptive field reaches on each side (measured
#: from the gradient of one output pixel; ~151, rounded up to a multiple of 4). The completion
#: pipeline gives every hole this much real context so the network sees true surroundings.
RECEPTIVE_FIELD_RADIUS = 152


@dataclass(frozen=True)
class LayerSpec:
    """One row of the paper's completion network table (channels at width 1.0)."""

    kind: str  # "conv" or "deconv"
    kernel: int
    stride: int
    dilation: int
    out_channels: int


#: Table 1 of the paper. Every layer but the last is followed by BatchNorm and ReLU.
COMPLETION_LAYERS: tuple[LayerSpec, ...] = (
    LayerSpec("conv", 5, 1, 1, 64),
    LayerSpec("conv", 3, 2, 1, 128),
    LayerSpec("conv", 3, 1, 1, 128),
    LayerSpec("conv", 3, 2, 1, 256),
    LayerSpec("conv", 3, 1, 1, 256),
    LayerSpec("conv", 3, 1, 1, 256),
    LayerSpec("conv", 3, 1, 2, 256),
    LayerSpec("conv", 3, 1, 4, 256),
    LayerSpec("conv", 3, 1, 8, 256),
    LayerSpec("conv", 3, 1, 16, 256),
    LayerSpec("conv", 3, 1, 1, 256),
    LayerSpec("conv", 3, 1, 1, 256),
    LayerSpec("deconv", 4, 2, 1, 128),
    LayerSpec("conv", 3, 1, 1, 128),
    LayerSpec("deconv", 4, 2, 1, 64),
    LayerSpec("conv", 3, 1, 1, 32),
    LayerSpec("conv", 3, 1, 1, 3),
)

#: Channel counts of the discriminators' 5x5 stride-2 convolutions (paper, Table 2).
GLOBAL_DISCRIMINATOR_CHANNELS = (64, 128, 256, 512, 512, 512)
LOCAL_DISCRIMINATOR_CHANNELS = (64, 128, 256, 512, 512)
DISCRIMINATOR_FEATURES = 1024


def scaled_channels(channels: int, width: float) -> int:
    """Hidden channel count at a width multiplier; never below one channel."""
    return max(1, round(channels * width))


def _check_width(width: float) -> None:
    if not (0.0 < width <= 4.0):
        raise ValueError(f"width must be in (0, 4], got {width}")


class CompletionNetwork(nn.Module):
    """The paper's 17-layer fully convolutional completion network.

    Input: (N, 4, H, W) with RGB in [0, 1] minus the model's mean colour, hole pixels zeroed, and
    the binary hole mask as the fourth channel (see `prepare_input`). H and W must be multiples
    of 4. Output: (N, 3, H, W) RGB in [0, 1]; only hole pixels are meant to be used.

    `width` scales every hidden channel count (the three output channels stay), so 0.5 gives a
    compact model with about a quarter of the compute.
    """

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        _check_width(width)
        self.width = float(width)
        modules: list[nn.Module] = []
        in_channels = 4
        last = len(COMPLETION_LAYERS) - 1
        for index, spec in enumerate(COMPLETION_LAYERS):
            is_output = index == last
            out_channels = (
                spec.out_channels if is_output else scaled_channels(spec.out_channels, width)
            )
            if spec.kind == "deconv":
                # Kernel 4, stride 2, padding 1 doubles the resolution exactly.
                modules.append(
                    nn.ConvTranspose2d(
                        in_channels, out_channels, spec.kernel, stride=spec.stride, padding=1
                    )
                )
            else:
                padding = spec.dilation * (spec.kernel - 1) // 2
                modules.append(
                    nn.Conv2d(
                        in_channels,
                        out_channels,
                        spec.kernel,
                        stride=spec.stride,
                        padding=padding,
                        dilation=spec.dilation,
                    )
                )
            if is_output:
                modules.append(nn.Sigmoid())
            else:
                modules.append(nn.BatchNorm2d(out_channels))
                modules.append(nn.ReLU(inplace=True))
            in_channels = out_channels
        self.layers = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_completion_input(x)
        return self.layers(x)


#: What `trainable_parameters` can select: every layer, or the decoder only.
TRAINABLE_PARTS = ("all", "decoder")


def trainable_parameters(network: CompletionNetwork, part: str) -> list[nn.Parameter]:
    """Every parameter (`all`), or those of the layers after the last dilated convolution.

    The decoder alone is what short fine-tuning should move: measured on this network (docs/
    adapt.md), training every layer with a small budget first makes the fills worse, while the
    decoder learns a domain's textures and colours without disturbing the encoder's context.
    """
    if part not in TRAINABLE_PARTS:
        choices = ", ".join(TRAINABLE_PARTS)
        raise ValueError(f"trainable part must be one of {choices}, not {part!r}")
    parameters = list(network.parameters())
    if part == "all":
        return parameters
    layers = list(network.layers)
    last_dilated = max(
        index
        for index, layer in enumerate(layers)
        if isinstance(layer, nn.Conv2d) and layer.dilation != (1, 1)
    )
    return [p for layer in layers[last_dilated + 1 :] for p in layer.parameters()]


def train_only(network: CompletionNetwork, part: str) -> list[nn.Parameter]:
    """Freeze every parameter outside `part` (see `trainable_parameters`) and return the rest.

    Frozen layers get no gradient, so backpropagation stops at the first trained layer: most of
    a decoder-only step's saving. BatchNorm layers still follow the data's statistics in train
    mode, frozen or not.
    """
    trained = trainable_parameters(network, part)
    network.requires_grad_(False)
    for parameter in trained:
        parameter.requires_grad_(True)
    return trained


class FusedCompletionNetwork(nn.Module):
    """An inference-only copy of a completion network with each BatchNorm folded into its conv.

    Eval-mode BatchNorm is an affine map per channel, so it folds exactly into the preceding
    convolution's weights (torch's `fuse_conv_bn_eval`); this saves a full activation write and
    read per layer: about a fifth of the time and the largest temporary buffers.
    """

    def __init__(self, network: CompletionNetwork) -> None:
        super().__init__()
        if network.training:
            raise ValueError("fold BatchNorm only from a network in eval mode")
        layers = list(network.layers)
        fused: list[nn.Module] = []
        index = 0
        while index < len(layers):
            layer = layers[index]
            following = layers[index + 1] if index + 1 < len(layers) else None
            if isinstance(following, nn.BatchNorm2d):
                transpose = isinstance(layer, nn.ConvTranspose2d)
                fused.append(fuse_conv_bn_eval(layer, following, transpose=transpose))
                index += 2
            else:  # a copy, so later layout changes never touch the original network
                fused.append(copy.deepcopy(layer))
                index += 1
        self.layers = nn.Sequential(*fused).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_completion_input(x)
        return self.layers(x)


def check_completion_input(x: torch.Tensor) -> None:
    """Raise a `ValueError` that says what is wrong, before torch fails with a shape error."""
    if x.dim() != 4 or x.shape[1] != 4:
        raise ValueError(
            "completion network input must be (N, 4, H, W): RGB minus the mean colour plus the "
            f"hole mask; got shape {tuple(x.shape)}"
        )
    height, width = x.shape[-2:]
    if height % SIDE_MULTIPLE or width % SIDE_MULTIPLE or height == 0 or width == 0:
        raise ValueError(
            f"completion network input sides must be positive multiples of {SIDE_MULTIPLE}; "
            f"got {height}x{width} (pad the image first)"
        )


def prepare_input(rgb: torch.Tensor, hole: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Build the network input from RGB in [0, 1] (N, 3, H, W) and a 0/1 hole mask (N, 1, H, W).

    The mean colour is subtracted and hole pixels are set to zero, i.e. to the mean colour, so
    the network never sees what was under the hole.
    """
    centred = (rgb - mean.view(1, 3, 1, 1).to(rgb)) * (1.0 - hole)
    return torch.cat([centred, hole], dim=1)


class _ConvFeatureStack(nn.Module):
    """5x5 stride-2 convolutions (each with BN and ReLU), then one fully connected layer."""

    def __init__(self, channels: tuple[int, ...], input_size: int, width: float) -> None:
        super().__init__()
        _check_width(width)
        if input_size < 1:
            raise ValueError(f"discriminator input size must be positive, got {input_size}")
        self.input_size = input_size
        modules: list[nn.Module] = []
        in_channels = 3
        side = input_size
        for base in channels:
            out_channels = scaled_channels(base, width)
            modules += [
                nn.Conv2d(in_channels, out_channels, 5, stride=2, padding=2),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
            in_channels = out_channels
            side = (side + 1) // 2  # 5x5, stride 2, padding 2: ceil(side / 2)
        self.convs = nn.Sequential(*modules)
        self.features = scaled_channels(DISCRIMINATOR_FEATURES, width)
        self.fc = nn.Linear(in_channels * side * side, self.features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = (3, self.input_size, self.input_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"{type(self).__name__} expects (N, {expected[0]}, {expected[1]}, "
                f"{expected[2]}) images; got shape {tuple(x.shape)}"
            )
        return torch.relu(self.fc(torch.flatten(self.convs(x), 1)))


class GlobalDiscriminator(_ConvFeatureStack):
    """Sees the whole completed image (paper: 256x256), six convolutions, 1024 features."""

    def __init__(self, image_size: int = 256, width: float = 1.0) -> None:
        super().__init__(GLOBAL_DISCRIMINATOR_CHANNELS, image_size, width)


class LocalDiscriminator(_ConvFeatureStack):
    """Sees a patch centred on the hole (paper: 128x128), five convolutions, 1024 features."""

    def __init__(self, patch_size: int = 128, width: float = 1.0) -> None:
        super().__init__(LOCAL_DISCRIMINATOR_CHANNELS, patch_size, width)


class ContextDiscriminator(nn.Module):
    """Both discriminators, their features concatenated (2048) and reduced to one logit.

    Returns raw logits of shape (N,); the sigmoid lives in the loss
    (`binary_cross_entropy_with_logits`), which is the numerically stable form.
    """

    def __init__(self, image_size: int = 256, patch_size: int = 128, width: float = 1.0) -> None:
        super().__init__()
        self.global_discriminator = GlobalDiscriminator(image_size, width)
        self.local_discriminator = LocalDiscriminator(patch_size, width)
        features = self.global_discriminator.features + self.local_discriminator.features
        self.fc = nn.Linear(features, 1)

    def forward(self, image: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
        if image.shape[0] != patch.shape[0]:
            raise ValueError(
                f"images and local patches must come in equal numbers; got {image.shape[0]} "
                f"and {patch.shape[0]}"
            )
        joint = torch.cat(
            [self.global_discriminator(image), self.local_discriminator(patch)], dim=1
        )
        return self.fc(joint).squeeze(1)
