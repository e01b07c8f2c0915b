"""BN-Inception, Inception-v4, Inception-ResNet-v2 and Xception against their papers' figures.

Output sizes per stage are the figures' (on the meta device, so the 299x299 networks cost nothing); the
behaviour that makes each network what it is (pass-through pooling, scaled residuals, separable convs
without a nonlinearity, identity shortcuts) is checked on real numbers with small blocks; a too-small
input is a one-paragraph error naming ``data.image_size`` and the minimum, which really works.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from models.bn_inception import FIGURE_5, BNInception, BNInceptionModule
from models.errors import ModelConfigError
from models.inception_v4 import InceptionResNetV2, InceptionV4
from models.inception_v4_blocks import InceptionResNetA, InceptionResNetC, ReductionA
from models.profile import profile_model
from models.xception import SeparableConv2d, Xception, XceptionBlock
from tests.conftest import assert_refused, model_config, run_cli
from tests.models.conftest import on_meta


def outputs(model: nn.Module, size: int, channels: int = 3) -> dict[str, list[int] | None]:
    """Each profile row's output as [H, W, C]."""
    return {row["name"]: row["output"] for row in profile_model(model, (channels, size, size))["rows"]}


def stage_outputs(model: nn.Module, size: int) -> dict[str, list[int]]:
    return {name.removeprefix("features."): shape for name, shape in outputs(model, size).items()
            if name.startswith("features.")}


# --- output sizes: the figures' ------------------------------------------------------------------------
def test_bn_inception_figure_5_output_sizes() -> None:
    """Fig. 5 at 224; 4c and 4d are 608 wide (their columns' sum, see the module docstring), so 4e passes
    608 channels through: 192 + 256 + 608."""
    sizes = stage_outputs(on_meta(BNInception), 224)
    assert sizes == {
        "conv1": [112, 112, 64], "pool1": [56, 56, 64], "conv2_reduce": [56, 56, 64], "conv2": [56, 56, 192],
        "pool2": [28, 28, 192], "inception3a": [28, 28, 256], "inception3b": [28, 28, 320],
        "inception3c": [14, 14, 576], "inception4a": [14, 14, 576], "inception4b": [14, 14, 576],
        "inception4c": [14, 14, 608], "inception4d": [14, 14, 608], "inception4e": [7, 7, 1056],
        "inception5a": [7, 7, 1024], "inception5b": [7, 7, 1024],
    }


def test_inception_v4_figure_9_output_sizes() -> None:
    model = on_meta(InceptionV4)
    assert stage_outputs(model, 299) == {
        "stem": [35, 35, 384], "inception_a": [35, 35, 384], "reduction_a": [17, 17, 1024],
        "inception_b": [17, 17, 1024], "reduction_b": [8, 8, 1536], "inception_c": [8, 8, 1536],
    }
    assert [len(model.features[i]) for i in (1, 3, 5)] == [4, 7, 3]


def test_the_stem_follows_figure_3() -> None:
    seen: dict[str, list[int]] = {}

    def record(name: str):
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            seen[name] = list(output.shape[1:])
        return hook

    stem = on_meta(InceptionV4).features.stem
    for name, module in stem.named_children():
        module.register_forward_hook(record(name))
    stem(torch.zeros(1, 3, 299, 299, device="meta"))
    assert seen == {"conv1": [32, 149, 149], "conv2": [32, 147, 147], "conv3": [64, 147, 147],
                    "mixed1": [160, 73, 73], "mixed2": [192, 71, 71], "mixed3": [384, 35, 35]}


def test_inception_resnet_v2_layouts() -> None:
    """The paper's Fig. 15 with the v2 widths, and TF-slim's released network."""
    paper = on_meta(InceptionResNetV2, layout="paper")
    assert stage_outputs(paper, 299) == {
        "stem": [35, 35, 384], "inception_resnet_a": [35, 35, 384], "reduction_a": [17, 17, 1152],
        "inception_resnet_b": [17, 17, 1152], "reduction_b": [8, 8, 2144], "inception_resnet_c": [8, 8, 2144],
    }
    assert [len(paper.features[i]) for i in (1, 3, 5)] == [5, 10, 5]
    reference = on_meta(InceptionResNetV2)
    assert stage_outputs(reference, 299) == {
        "stem": [35, 35, 320], "inception_resnet_a": [35, 35, 320], "reduction_a": [17, 17, 1088],
        "inception_resnet_b": [17, 17, 1088], "reduction_b": [8, 8, 2080], "inception_resnet_c": [8, 8, 2080],
        "conv": [8, 8, 1536],
    }
    assert [len(reference.features[i]) for i in (1, 3, 5)] == [10, 20, 10]
    assert reference.num_features == 1536 and paper.num_features == 2144


def test_xception_figure_5_output_sizes() -> None:
    model = on_meta(Xception)
    assert stage_outputs(model, 299) == {
        "conv1": [149, 149, 32], "conv2": [147, 147, 64], "entry_block1": [74, 74, 128],
        "entry_block2": [37, 37, 256], "entry_block3": [19, 19, 728], "middle_flow": [19, 19, 728],
        "exit_block": [10, 10, 1024], "exit_conv1": [10, 10, 1536], "exit_conv2": [10, 10, 2048],
    }
    assert len(model.features.middle_flow) == 8


def test_reduction_a_widths_follow_table_1() -> None:
    """Output n + m + input: 384 + 256 + 384 for Inception-v4, 384 + 384 + 384 for Inception-ResNet-v2."""
    assert ReductionA(384, k=192, l=224, m=256, n=384).out_channels == 1024
    assert ReductionA(384, k=256, l=256, m=384, n=384).out_channels == 1152


# --- what makes each network itself, on real numbers ------------------------------------------------------
@torch.no_grad()
def test_pass_through_modules_halve_the_grid_and_pass_the_max_pool_through() -> None:
    """3c: stride-2 towers (160 + 96) and the input's 3x3/2 max pool, unprojected, as its last 320 channels."""
    module = BNInceptionModule(320, FIGURE_5["3c"]).eval()
    x = torch.randn(2, 320, 9, 9)
    out = module(x)
    assert out.shape == (2, 160 + 96 + 320, 5, 5)
    torch.testing.assert_close(out[:, 256:], F.max_pool2d(x, 3, stride=2, padding=1), rtol=0, atol=0)
    assert [spec.pool for spec in FIGURE_5.values()] == ["avg"] * 2 + ["max"] + ["avg"] * 4 + ["max", "avg", "max"]


@torch.no_grad()
def test_inception_resnet_block_adds_the_scaled_linear_branch() -> None:
    """relu(x + scale * W(concat(branches(x))) + scale * b): the 1x1 "Linear" conv has no BN and no ReLU."""
    block = InceptionResNetA(16, scale=0.17).eval()
    x = torch.randn(2, 16, 6, 6)
    branches = block.branches(x)
    expected = torch.relu(x + 0.17 * F.conv2d(branches, block.project.weight, block.project.bias))
    torch.testing.assert_close(block(x), expected)
    nn.init.zeros_(block.project.weight)
    nn.init.zeros_(block.project.bias)
    torch.testing.assert_close(block(x), torch.relu(x))  # a zero branch leaves the (rectified) input
    linear = InceptionResNetC(16, scale=1.0, activate=False).eval()
    nn.init.zeros_(linear.project.weight)
    nn.init.zeros_(linear.project.bias)
    torch.testing.assert_close(linear(x), x)  # the reference network's last block: no ReLU


def test_residual_scales_of_the_reference_network() -> None:
    """TF-slim: 0.17, 0.10, 0.20 (the paper: "between 0.1 and 0.3"); its last C block is unscaled and linear."""
    model = on_meta(InceptionResNetV2)
    scales = {stage: [block.scale for block in model.features.get_submodule(stage)]
              for stage in ("inception_resnet_a", "inception_resnet_b", "inception_resnet_c")}
    assert scales == {"inception_resnet_a": [0.17] * 10, "inception_resnet_b": [0.1] * 20,
                      "inception_resnet_c": [0.2] * 9 + [1.0]}
    assert isinstance(model.features.inception_resnet_c[-1].relu, nn.Identity)
    paper = on_meta(InceptionResNetV2, layout="paper", residual_scales=(0.3, 0.2, 0.1))
    assert {block.scale for block in paper.features.inception_resnet_c} == {0.1}
    assert all(isinstance(block.relu, nn.ReLU) for block in paper.features.inception_resnet_c)


@torch.no_grad()
def test_separable_conv_is_linear_depthwise_then_pointwise() -> None:
    """No nonlinearity between the halves (Fig. 10): f(2a - 3b) = 2 f(a) - 3 f(b); 9 C + C N weights."""
    conv = SeparableConv2d(8, 12)
    a, b = torch.randn(1, 8, 5, 5), torch.randn(1, 8, 5, 5)
    torch.testing.assert_close(conv(2 * a - 3 * b), 2 * conv(a) - 3 * conv(b), rtol=1e-4, atol=1e-5)
    assert conv.depthwise.groups == 8 and sum(p.numel() for p in conv.parameters()) == 9 * 8 + 8 * 12


@torch.no_grad()
def test_xception_middle_flow_has_an_identity_shortcut_and_the_entry_flow_a_strided_one() -> None:
    """With every residual BN's scale and shift at 0 the residual branch is 0: a middle block returns its
    input, an entry block the 1x1/2 shortcut conv (+ BN) of it."""
    x = torch.randn(2, 16, 7, 7)
    middle = XceptionBlock(16, (16, 16, 16), downsample=False).eval()
    entry = XceptionBlock(16, (32, 32), downsample=True).eval()
    for block in (middle, entry):
        for bn in (m for m in block.residual.modules() if isinstance(m, nn.BatchNorm2d)):
            nn.init.zeros_(bn.weight)
            nn.init.zeros_(bn.bias)
    torch.testing.assert_close(middle(x), x)
    shortcut_conv, shortcut_bn = entry.shortcut[0], entry.shortcut[1]
    assert shortcut_conv.kernel_size == (1, 1) and shortcut_conv.stride == (2, 2)
    torch.testing.assert_close(entry(x), shortcut_bn(shortcut_conv(x)))
    assert entry(x).shape == (2, 32, 4, 4)


@pytest.mark.parametrize("factory", [lambda: BNInception(1, 5, 32), lambda: Xception(1, 5, 32)])
def test_a_training_step_reaches_every_parameter(factory) -> None:
    """The two networks small enough to run for real here: train mode, backward, every parameter gets a
    gradient (the 299x299 networks are checked on the meta device above)."""
    model = factory().train()
    loss = F.cross_entropy(model(torch.randn(2, 1, 32, 32)), torch.tensor([0, 4]))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# --- input sizes -----------------------------------------------------------------------------------------
# The smallest input each network takes, by hand: Inception-v4 / -ResNet-v2: 1 <- 3 (Reduction-B) <- 7
# (Reduction-A) <- 15 (3x3/2 V) <- 17 (3x3 V) <- 35 (3x3/2 V) <- 37 (3x3 V) <- 75 (3x3/2 V). BN-Inception:
# the second unpadded 3x3/2 pool needs 3 <- 6 after the first pool (ceil mode) <- 11 (7x7/2, padding 3).
# Xception: 1 <- 3 (3x3 V) <- 7 (3x3/2 V); its stride-2 pools are padded.
MINIMUM = {"inception_v4": 75, "inception_resnet_v2": 75, "inception_resnet_v2_paper": 75, "bn_inception": 11,
           "xception": 7}
FACTORIES = {"inception_v4": lambda **kw: InceptionV4(**kw), "inception_resnet_v2": lambda **kw: InceptionResNetV2(**kw),
             "inception_resnet_v2_paper": lambda **kw: InceptionResNetV2(layout="paper", **kw),
             "bn_inception": lambda **kw: BNInception(**kw), "xception": lambda **kw: Xception(**kw)}


@pytest.mark.parametrize("name", sorted(MINIMUM))
def test_the_minimum_input_works_and_one_pixel_less_is_explained(name: str) -> None:
    minimum = MINIMUM[name]
    with torch.device("meta"):
        model = FACTORIES[name](in_channels=2, num_classes=5, input_size=minimum)
        assert model.eval()(torch.zeros(2, 2, minimum, minimum)).shape == (2, 5)
        with pytest.raises(ModelConfigError, match=rf"at least {minimum}x{minimum} pixels") as error:
            FACTORIES[name](input_size=minimum - 1)
    assert error.value.key == "input_size" and "data.image_size" in str(error.value)


def test_a_too_small_image_from_the_command_line_is_one_paragraph(tmp_path) -> None:
    result = run_cli("experiments.summary", "model=inception_resnet_v2", "data=cifar10", cwd=tmp_path)
    assert_refused(result, ["data.image_size=32", "Inception-ResNet-v2", "at least 75x75", "299x299"])
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(["bn_inception", "xception"]), size=st.integers(1, 48), channels=st.integers(1, 4),
       classes=st.integers(1, 9), batch=st.integers(2, 3))
def test_any_size_classifies_or_is_refused(name: str, size: int, channels: int, classes: int, batch: int) -> None:
    """Every input from the minimum up maps (B, C, H, W) -> (B, classes) in both modes; below it, a
    ModelConfigError, never a torch shape error."""
    with torch.device("meta"):
        if size < MINIMUM[name]:
            with pytest.raises(ModelConfigError):
                FACTORIES[name](in_channels=channels, num_classes=classes, input_size=size)
            return
        model = FACTORIES[name](in_channels=channels, num_classes=classes, input_size=size)
        for mode in (True, False):
            assert model.train(mode)(torch.zeros(batch, channels, size, size)).shape == (batch, classes)


# --- bad arguments ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("factory", "key", "words"), [
    (lambda: InceptionResNetV2(layout="v1"), "layout", "reference, paper"),
    (lambda: InceptionResNetV2(residual_scales=(0.1, 0.2)), "residual_scales", "three numbers in (0, 1]"),
    (lambda: InceptionResNetV2(residual_scales=(0.1, 0.0, 0.2)), "residual_scales", "[0.17,0.1,0.2]"),
    (lambda: BNInception(stem="depthwise"), "stem", "conv, separable"),
    (lambda: Xception(dropout=1.0), "dropout", "[0, 1)"),
    (lambda: InceptionV4(num_classes=0), "num_classes", "positive integer"),
])
def test_bad_arguments_name_the_key_and_the_fix(factory, key: str, words: str) -> None:
    with torch.device("meta"), pytest.raises(ModelConfigError) as error:
        factory()
    assert error.value.key == key and words in str(error.value)


# --- the configs' published figures ----------------------------------------------------------------------
@pytest.mark.parametrize(("name", "top1_err", "input_size"), [
    ("bn_inception", 25.2, 224),             # BN paper Fig. 4; Rethinking the Inception Architecture, Table 3
    ("inception_v4", 20.0, 299),             # Inception-v4 paper, Table 2
    ("inception_resnet_v2", 19.9, 299),      # Inception-v4 paper, Table 2
    ("inception_resnet_v2_paper", 19.9, 299),
    ("xception", 21.0, 299),                 # Xception paper, Table 1 (top-1 accuracy 0.790)
])
def test_configs_give_the_single_crop_top1_error_and_the_native_input(name: str, top1_err: float,
                                                                      input_size: int) -> None:
    paper = model_config(name).paper
    assert paper.top1_err == top1_err and paper.input_size == input_size and paper.num_classes == 1000
