"""Model configs inherit family bases (conf/model/_<family>.yaml): bases are used, complete nothing on
their own, and are never offered as options."""

from __future__ import annotations

import io

import pytest
import yaml
from omegaconf import OmegaConf
from tests.conftest import CONF, MODEL_NAMES, model_config, run_cli

from experiments.core.fast_help import config_groups, group_options, print_help

BASES = sorted(p.stem for p in (CONF / "model").glob("_*.yaml"))


def defaults_of(name: str) -> list[str]:
    return (yaml.safe_load((CONF / "model" / f"{name}.yaml").read_text()) or {}).get("defaults") or []


def inherited(name: str) -> set[str]:
    """Every base a config inherits, directly or through other bases."""
    found = set()
    for entry in defaults_of(name):
        if entry != "_self_":
            found |= {entry} | inherited(entry)
    return found


def test_there_are_bases_and_models():
    assert {"_model", "_resnet_cifar", "_resnet_imagenet", "_vgg", "_densenet_imagenet"} <= set(BASES)
    assert len(MODEL_NAMES) >= 50 and not set(BASES) & set(MODEL_NAMES)


@pytest.mark.parametrize("base", BASES)
def test_every_base_is_used_by_a_model(base):
    users = [name for name in MODEL_NAMES if base in inherited(name)]
    assert users, f"conf/model/{base}.yaml is inherited by no model config: delete it or use it"


@pytest.mark.parametrize("name", MODEL_NAMES + BASES)
def test_defaults_name_a_base_then_self(name):
    """`defaults: [<base>, _self_]`: the base first, so that the file's own keys win over the base's."""
    defaults = defaults_of(name)
    if name == "_model":
        assert defaults == []
        return
    assert defaults[-1:] == ["_self_"] and len(defaults) == 2, defaults
    assert defaults[0].startswith("_") and (CONF / "model" / f"{defaults[0]}.yaml").is_file(), defaults


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_composes_complete_with_its_own_name(compose, name):
    cfg = compose([f"model={name}"])
    assert cfg.hydra.runtime.choices.model == name  # the base is in the defaults tree, not a choice
    missing = sorted(OmegaConf.missing_keys(cfg.model))
    assert not missing, f"model={name} leaves {missing} at ??? (set them in conf/model/{name}.yaml)"
    keys = list(cfg.model)
    # A key that a model adds and its base lacks would land after `paper`: the base must list it.
    assert keys[:4] == ["_target_", "in_channels", "num_classes", "input_size"], keys
    assert keys[-2:] == ["channels_last", "paper"], keys
    assert list(cfg.model.paper)[:3] == ["title", "input_size", "num_classes"]


def test_model_config_helper_keeps_the_data_interpolations():
    raw = OmegaConf.to_container(model_config("resnet56"), resolve=False)
    assert raw["depth"] == 56 and raw["shortcut"] == "A" and raw["in_channels"] == "${data.in_channels}"


def test_listings_for_users_leave_the_bases_out():
    assert group_options("model") == MODEL_NAMES
    assert config_groups()["model"] == MODEL_NAMES
    assert all(not option.startswith("_") for options in config_groups().values() for option in options)


def _model_options(help_text: str) -> list[str]:
    model_line = next(line for line in help_text.splitlines() if line.startswith("model: "))
    return model_line.removeprefix("model: ").split(", ")


@pytest.mark.parametrize("app", ["train", "summary"])
def test_help_does_not_offer_a_base(app):
    out = io.StringIO()
    print_help(app, app, [app, "--help"], stream=out)
    options = _model_options(out.getvalue())
    assert options == MODEL_NAMES
    assert "_resnet_cifar" not in options and "_model" not in options


@pytest.mark.parametrize("module", ["experiments.train", "experiments.summary"])
def test_help_command_does_not_offer_a_base(module, tmp_path):
    result = run_cli(module, "--help", cwd=tmp_path, check=True)
    assert _model_options(result.stdout) == MODEL_NAMES
    assert list(tmp_path.iterdir()) == []


def test_summary_refuses_a_base(compose):
    from experiments.summary import require_a_model
    from models.errors import ModelConfigError

    cfg = compose(["model=_resnet_cifar"], config_name="summary")
    with pytest.raises(ModelConfigError, match="is a base") as error:
        require_a_model(cfg, "_resnet_cifar")
    assert "depth, shortcut" in str(error.value) and "resnet56" in str(error.value)
    require_a_model(compose(["model=resnet56"], config_name="summary"), "resnet56")
