"""ShuffleNet v2 against Ma et al. 2018 (Tables 5 and 8, Fig. 3) and torchvision's builders."""

from __future__ import annotations

import pytest
import torch
import torchvision

from models.errors import ModelConfigError
from models.profile import profile_model
from models.shufflenet import ShuffleNetV2, ShuffleUnit
from tests.conftest import assert_refused, run_cli
from tests.models.conftest import count, on_meta

# Table 5, per complexity level: output channels of stages 2-4 and conv5, "# of Weights", FLOPs (multiply-adds).
TABLE_5 = {
    0.5: ((48, 96, 192, 1024), 1.4e6, 41e6),
    1.0: ((116, 232, 464, 1024), 2.3e6, 146e6),
    1.5: ((176, 352, 704, 1024), 3.5e6, 299e6),
    2.0: ((244, 488, 976, 2048), 7.4e6, 591e6),
}
BUILDERS = {0.5: "shufflenet_v2_x0_5", 1.0: "shufflenet_v2_x1_0", 1.5: "shufflenet_v2_x1_5", 2.0: "shufflenet_v2_x2_0"}


@pytest.mark.parametrize("width", list(TABLE_5))
def test_parameters_are_torchvisions_and_table_5s(width: float) -> None:
    ours = count(on_meta(ShuffleNetV2, width_multiplier=width))
    with torch.device("meta"):
        theirs = count(torchvision.models.get_model(BUILDERS[width], weights=None))
    assert ours == theirs
    assert round(ours / 1e6, 1) == TABLE_5[width][1] / 1e6


@pytest.mark.parametrize("width", list(TABLE_5))
def test_output_sizes_and_multiply_adds_follow_table_5(width: float) -> None:
    (c2, c3, c4, c5), _, flops = TABLE_5[width]
    profile = profile_model(on_meta(ShuffleNetV2, width_multiplier=width), (3, 224, 224))
    sizes = {row["name"]: row["output"] for row in profile["rows"]}
    assert [sizes[name] for name in ("conv1", "maxpool", "stage2", "stage3", "stage4", "conv5")] == [
        [112, 112, 24], [56, 56, 24], [28, 28, c2], [14, 14, c3], [7, 7, c4], [7, 7, c5]]
    assert [len(on_meta(ShuffleNetV2, width_multiplier=width).get_submodule(f"stage{i}")) for i in (2, 3, 4)] \
        == [4, 8, 4]  # Table 5's repeats: 1 + 3, 1 + 7, 1 + 3
    assert profile["macs"] == pytest.approx(flops, rel=0.02)


@torch.no_grad()
def test_a_basic_unit_passes_half_its_channels_and_interleaves_them_with_the_branch() -> None:
    """Fig. 3c: split c = 8 into 4 + 4, branch the second half, concat, shuffle in 2 groups:
    output channels 0, 2, 4, 6 are the untouched input channels 0-3, channels 1, 3, 5, 7 the branch's."""
    unit = ShuffleUnit(8, 8, stride=1).eval()
    assert not hasattr(unit, "branch1")
    x = torch.randn(2, 8, 5, 5)
    out = unit(x)
    assert torch.equal(out[:, 0::2], x[:, :4])
    torch.testing.assert_close(out[:, 1::2], unit.branch2(x[:, 4:]))


@torch.no_grad()
def test_a_downsampling_unit_has_no_split_and_doubles_the_width() -> None:
    """Fig. 3d: both branches see all 24 input channels; 116 = 2 x 58 outputs at half the resolution."""
    unit = ShuffleUnit(24, 116, stride=2).eval()
    x = torch.randn(1, 24, 56, 56)
    out = unit(x)
    assert out.shape == (1, 116, 28, 28)
    torch.testing.assert_close(out[:, 0::2], unit.branch1(x))
    torch.testing.assert_close(out[:, 1::2], unit.branch2(x))


def test_fashion_mnist_sized_grey_images_run_end_to_end() -> None:
    model = ShuffleNetV2(1, 10, 28, width_multiplier=0.5).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, 1024, 1, 1)  # 28 -> 14 -> 7 -> 4 -> 2 -> 1
        assert model(x).shape == (2, 10) and model.forward_head(features, pre_logits=True).shape == (2, 1024)


def test_a_width_that_is_not_in_table_5_is_refused() -> None:
    with pytest.raises(ModelConfigError, match=r"width_multiplier=0\.75.*0\.5, 1\.0, 1\.5, 2\.0") as info:
        ShuffleNetV2(width_multiplier=0.75)
    assert info.value.key == "width_multiplier"


def test_the_command_refuses_a_bad_width_in_one_paragraph(tmp_path) -> None:
    result = run_cli("experiments.summary", "model=shufflenet_v2_x1_0", "model.width_multiplier=0.7", cwd=tmp_path)
    assert_refused(result, ["model.width_multiplier=0.7", "Use one of: 0.5, 1.0, 1.5, 2.0"])
    assert list(tmp_path.iterdir()) == []
