"""Output sizes per stage match the papers' tables; the aux-head contract holds."""

from __future__ import annotations

import pytest
import torch

from models.alexnet import AlexNet
from models.googlenet import GoogLeNet
from models.inception import InceptionV3
from models.profile import profile_model
from models.resnet import ResNet
from models.zfnet import ZFNet
from tests.models.conftest import on_meta


def outputs(model, shape) -> dict[str, list[int] | None]:
    return {row["name"]: row["output"] for row in profile_model(model, shape)["rows"]}


def test_resnet50_stage_sizes() -> None:
    sizes = outputs(on_meta(ResNet, depth=50), (3, 224, 224))
    assert sizes["conv1"] == [112, 112, 64]
    assert [sizes[f"layer{i}"] for i in range(1, 5)] == [[56, 56, 256], [28, 28, 512], [14, 14, 1024], [7, 7, 2048]]


@pytest.mark.parametrize("in_channels", [1, 3])
def test_cifar_resnet_stage_sizes(in_channels: int) -> None:
    sizes = outputs(on_meta(ResNet, in_channels, 10, 32, form="cifar", depth=20, shortcut="A"), (in_channels, 32, 32))
    assert [sizes[f"layer{i}"] for i in range(1, 4)] == [[32, 32, 16], [16, 16, 32], [8, 8, 64]]


def test_googlenet_table_1_output_sizes() -> None:
    sizes = outputs(on_meta(GoogLeNet), (3, 224, 224))
    table = {
        "conv1": [112, 112, 64], "maxpool1": [56, 56, 64], "conv3": [56, 56, 192], "maxpool2": [28, 28, 192],
        "inception3a": [28, 28, 256], "inception3b": [28, 28, 480], "maxpool3": [14, 14, 480],
        "inception4a": [14, 14, 512], "inception4b": [14, 14, 512], "inception4c": [14, 14, 512],
        "inception4d": [14, 14, 528], "inception4e": [14, 14, 832], "maxpool4": [7, 7, 832],
        "inception5a": [7, 7, 832], "inception5b": [7, 7, 1024], "avgpool": [1, 1, 1024],
    }
    assert {name: sizes[name] for name in table} == table
    assert sizes["aux1"] is None and sizes["aux2"] is None  # training only


def test_alexnet_and_zfnet_feature_map_sizes() -> None:
    alex = outputs(on_meta(AlexNet), (3, 227, 227))
    assert [alex[f"features.{i}"][0] for i in (0, 3, 4, 7, 8, 10, 12, 14)] == [55, 27, 27, 13, 13, 13, 13, 6]
    zf = outputs(on_meta(ZFNet), (3, 224, 224))
    assert [zf[f"features.{i}"][0] for i in (0, 2, 4, 6, 14)] == [110, 55, 26, 13, 6]


def test_googlenet_returns_aux_logits_in_training_only() -> None:
    model = on_meta(GoogLeNet, 3, 10, 224)
    x = torch.zeros(2, 3, 224, 224, device="meta")
    main, aux1, aux2 = model.train()(x)
    assert main.shape == aux1.shape == aux2.shape == (2, 10)
    assert isinstance(model.eval()(x), torch.Tensor)
    assert isinstance(on_meta(GoogLeNet, 3, 10, 224, aux_logits=False).train()(x), torch.Tensor)


def test_inception_v3_returns_a_plain_tuple_in_training() -> None:
    model = on_meta(InceptionV3, 1, 10, 299)
    x = torch.zeros(2, 1, 299, 299, device="meta")
    output = model.train()(x)
    assert type(output) is tuple and [t.shape for t in output] == [(2, 10), (2, 10)]
    assert model.eval()(x).shape == (2, 10)


def test_stochastic_depth_is_identity_at_test_time() -> None:
    model = ResNet(3, 10, 32, form="cifar", depth=20, shortcut="A", stochastic_depth=0.5).eval()
    twin = ResNet(3, 10, 32, form="cifar", depth=20, shortcut="A").eval()
    twin.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), twin(x))
    drops = [block.stochastic_depth.p for stage in model.stages for block in stage]
    assert drops == pytest.approx([0.5 * (i + 1) / 9 for i in range(9)])  # linear decay to p_L = 0.5


def test_zero_init_residual_starts_blocks_as_identity() -> None:
    model = ResNet(depth=18, zero_init_residual=True)
    assert all(int(torch.count_nonzero(block.bn2.weight)) == 0 for stage in model.stages for block in stage)


def test_zero_init_residual_leaves_plain_twins_alone() -> None:
    """A plain net has no shortcut for a zeroed block to fall back on: the option keeps its He init."""
    torch.manual_seed(0)
    plain = ResNet(1, 10, 16, form="cifar", depth=20, residual=False, shortcut="A", zero_init_residual=True)
    assert all(float(block.bn2.weight.detach().min()) == 1.0 for stage in plain.stages for block in stage)
    assert float(plain(torch.randn(4, 1, 16, 16)).detach().std()) > 0


def test_preactivation_and_wide_forms_forward() -> None:
    model = ResNet(3, 10, 32, form="wide", depth=10, widen_factor=2, block_dropout=0.3)
    assert model.train()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    bottleneck = ResNet(1, 5, 28, form="cifar", depth=11, block="bottleneck", preactivation=True, se_reduction=4)
    assert bottleneck(torch.randn(2, 1, 28, 28)).shape == (2, 5)


@torch.no_grad()
def test_alexnet_paper_init() -> None:
    """N(0, 0.01^2) weights; biases 1 in conv2, conv4, conv5 and the FC layers, 0 elsewhere."""
    model = AlexNet(3, 10, 227)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [float(c.bias.mean()) for c in convs] == [0.0, 1.0, 0.0, 1.0, 1.0]
    assert float(convs[2].weight.std()) == pytest.approx(0.01, rel=0.05)
    assert all(float(m.bias.mean()) == 1.0 for m in model.classifier if isinstance(m, torch.nn.Linear))


def test_naive_inception_grows_by_its_input_width() -> None:
    """Fig. 2a: without the pool projection, (3a) passes its 192 input channels through: 64+128+32+192."""
    sizes = outputs(on_meta(GoogLeNet, inception="naive"), (3, 224, 224))
    assert sizes["inception3a"] == [28, 28, 416]
    assert sizes["inception3b"] == [28, 28, 128 + 192 + 96 + 416]
