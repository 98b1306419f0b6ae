"""The networks match the paper's tables: parameter counts, layer order, shapes, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from glcic.networks import (
    COMPLETION_LAYERS,
    CompletionNetwork,
    ContextDiscriminator,
    GlobalDiscriminator,
    LocalDiscriminator,
    prepare_input,
)


def _parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper_size_completion_network_has_exact_parameter_count() -> None:
    assert _parameters(CompletionNetwork()) == 6_072_131


def test_half_width_is_about_a_quarter_of_the_model() -> None:
    ratio = _parameters(CompletionNetwork(0.5)) / _parameters(CompletionNetwork(1.0))
    assert 0.24 < ratio < 0.26


def test_layer_order_is_conv_batchnorm_relu_and_ends_in_sigmoid() -> None:
    layers = list(CompletionNetwork(0.25).layers)
    assert len(layers) == 3 * 16 + 2
    for block in range(16):
        conv, norm, relu = layers[3 * block : 3 * block + 3]
        assert isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d))
        assert conv.bias is not None
        assert isinstance(norm, nn.BatchNorm2d) and isinstance(relu, nn.ReLU)
    assert isinstance(layers[-2], nn.Conv2d) and layers[-2].out_channels == 3
    assert isinstance(layers[-1], nn.Sigmoid)
    dilations = [m.dilation[0] for m in layers if isinstance(m, nn.Conv2d)]
    assert dilations == [spec.dilation for spec in COMPLETION_LAYERS if spec.kind == "conv"]
    assert [type(m) for m in layers if isinstance(m, nn.ConvTranspose2d)] == [
        nn.ConvTranspose2d
    ] * 2


@pytest.mark.parametrize(("height", "width"), [(4, 4), (32, 48), (68, 100), (132, 64)])
def test_output_has_input_size_and_is_in_unit_range(height: int, width: int) -> None:
    net = CompletionNetwork(0.25).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 4, height, width))
    assert out.shape == (2, 3, height, width)
    assert out.min() >= 0 and out.max() <= 1


def test_eval_mode_is_deterministic() -> None:
    torch.manual_seed(0)
    net = CompletionNetwork(0.25).eval()
    x = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
        # channels_last picks other kernels: same values up to float rounding.
        fast = net(x.to(memory_format=torch.channels_last))
        assert torch.allclose(fast, net(x), atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 4, 30, 32), (1, 4, 32, 33), (1, 4, 0, 32)])
def test_sides_not_multiple_of_four_are_a_clear_value_error(shape) -> None:
    with pytest.raises(ValueError, match="multiples of 4"):
        CompletionNetwork(0.25)(torch.zeros(shape))


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (4, 32, 32)])
def test_wrong_channel_layout_is_a_clear_value_error(shape) -> None:
    with pytest.raises(ValueError, match=r"\(N, 4, H, W\)"):
        CompletionNetwork(0.25)(torch.zeros(shape))


@pytest.mark.parametrize("width", [0.0, -1.0, 5.0])
def test_bad_width_is_refused(width: float) -> None:
    with pytest.raises(ValueError, match="width"):
        CompletionNetwork(width)


def test_prepare_input_hides_hole_and_centres_colours() -> None:
    rgb = torch.rand(1, 3, 8, 8)
    hole = torch.zeros(1, 1, 8, 8)
    hole[..., 2:5, 3:6] = 1
    mean = torch.tensor([0.4, 0.5, 0.6])
    x = prepare_input(rgb, hole, mean)
    assert x.shape == (1, 4, 8, 8)
    assert torch.equal(x[:, 3:], hole)
    assert torch.all(x[:, :3, 2:5, 3:6] == 0)
    assert torch.allclose(x[0, :3, 0, 0], rgb[0, :, 0, 0] - mean)


def test_paper_size_discriminators_fc_sizes_follow_from_inputs() -> None:
    glob = GlobalDiscriminator(256)
    local = LocalDiscriminator(128)
    assert glob.fc.in_features == 512 * 4 * 4 and glob.fc.out_features == 1024
    assert local.fc.in_features == 512 * 4 * 4 and local.fc.out_features == 1024
    assert len([m for m in glob.convs if isinstance(m, nn.Conv2d)]) == 6
    assert len([m for m in local.convs if isinstance(m, nn.Conv2d)]) == 5
    assert all(
        m.kernel_size == (5, 5) and m.stride == (2, 2)
        for m in glob.convs
        if isinstance(m, nn.Conv2d)
    )
    assert ContextDiscriminator().fc.in_features == 2048


@pytest.mark.parametrize(("image", "patch"), [(64, 32), (96, 48), (100, 50)])
def test_context_discriminator_returns_one_logit_per_image(image: int, patch: int) -> None:
    disc = ContextDiscriminator(image, patch, width=0.125).eval()
    with torch.no_grad():
        logits = disc(torch.rand(3, 3, image, image), torch.rand(3, 3, patch, patch))
    assert logits.shape == (3,)


def test_discriminator_input_size_errors_are_clear() -> None:
    disc = ContextDiscriminator(64, 32, width=0.125)
    with pytest.raises(ValueError, match="GlobalDiscriminator expects"):
        disc(torch.rand(1, 3, 60, 60), torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="equal numbers"):
        disc(torch.rand(2, 3, 64, 64), torch.rand(1, 3, 32, 32))


def test_fused_inference_network_matches_and_follows_weight_changes() -> None:
    from glcic import ModelMetadata, new_model

    torch.manual_seed(0)
    model = new_model(ModelMetadata(width=0.25))
    for module in model.network.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    x = torch.rand(2, 4, 40, 48)
    with torch.no_grad():
        fused = model.inference_network()
        assert model.inference_network() is fused  # cached while nothing changes
        assert torch.allclose(fused(x), model.network(x), atol=1e-5)
        model.network.layers[0].weight.mul_(2.0)  # an in-place update, as an optimizer makes
        refreshed = model.inference_network()
        assert refreshed is not fused
        assert torch.allclose(refreshed(x), model.network(x), atol=1e-5)
    with pytest.raises(ValueError, match="multiples of 4"):
        refreshed(torch.zeros(1, 4, 30, 32))


_NO_DEPRECATION_SCRIPT = """
import numpy as np
import glcic.cli, glcic.daemon.cli, glcic.daemon.server, glcic.training.eval_cli
from glcic import complete, load_model
from glcic.model_names import resolve_model

for precision in ("float32", "bfloat16"):
    model = load_model(resolve_model("default"), precision=precision)
    image = np.full((96, 96, 3), 120, np.uint8)
    mask = np.zeros((96, 96), np.uint8)
    mask[30:60, 30:60] = 255
    complete(image, mask, model)
print("ran")
"""


def test_loading_and_completing_emit_no_deprecation_warning() -> None:
    """Issue 19: `torch.jit.script_method` warnings were blamed on glcic. Our code uses no
    TorchScript; importing every command, loading the packaged model and completing (the fused
    inference network included) must stay free of any DeprecationWarning, ours or torch's.
    (torch's own torch.utils.mkldnn, which its inductor imports under `torch.compile`, is where
    script_method warnings come from.)"""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", _NO_DEPRECATION_SCRIPT],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip() == "ran", result.stderr
    assert "Warning" not in result.stderr, result.stderr
