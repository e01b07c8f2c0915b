"""The zoo's twins of torchvision's classic and mobile models, and the one look-alike that is not a twin.

A *twin* is a model config whose network computes exactly what torchvision's builder of the same
architecture computes, from the same ``state_dict``: same keys, same shapes, same function (checked
for every pair in ``tests/models/test_torchvision_compat.py``). :data:`TWINS` lists them.

Strict loading proves the keys and shapes, not the function. The bottleneck ResNets of the paper
(He et al. 2015, "v1": ``stride_in_1x1: true``, configs ``resnet50``/``101``/``152``) put the stride of
a downsampling block on its first 1x1 conv; torchvision's (``resnet50`` etc., "v1.5", and every
ResNeXt and wide ResNet built the same way) put it on the 3x3 conv. The two have identical state-dict
keys and shapes, so a torchvision file loads into the v1 network without a word and computes
something else: the variant cannot be read from the file. :func:`torchvision_variant_problem` names
that case so that whoever loads a plain file (``finetune.from=<file.pth>``) can refuse it and point
at the twin config.

Not twins: ``googlenet`` (the paper's real 5x5 branches and LRN; torchvision uses 3x3 and BN),
``alexnet`` (the paper's two-GPU layout; ``alexnet_torchvision`` is the twin), ``resnext101_32x4d``,
``densenet264``, ``se_resnet50`` (torchvision has none).
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

# torchvision builder -> zoo config (conf/model/<config>.yaml) computing the same function.
TWINS: dict[str, str] = {
    "alexnet": "alexnet_torchvision",
    "vgg11": "vgg11", "vgg13": "vgg13", "vgg16": "vgg16", "vgg19": "vgg19",
    "vgg11_bn": "vgg11_bn", "vgg13_bn": "vgg13_bn", "vgg16_bn": "vgg16_bn", "vgg19_bn": "vgg19_bn",
    "resnet18": "resnet18", "resnet34": "resnet34",  # basic blocks: v1 and v1.5 are the same network
    "resnet50": "resnet50_v15", "resnet101": "resnet101_v15", "resnet152": "resnet152_v15",
    "resnext50_32x4d": "resnext50_32x4d", "resnext101_32x8d": "resnext101_32x8d",
    "resnext101_64x4d": "resnext101_64x4d",
    "wide_resnet50_2": "wide_resnet50_2", "wide_resnet101_2": "wide_resnet101_2",
    "densenet121": "densenet121", "densenet161": "densenet161", "densenet169": "densenet169",
    "densenet201": "densenet201",
    "squeezenet1_0": "squeezenet1_0", "squeezenet1_1": "squeezenet1_1",
    "inception_v3": "inception_v3",
    "mobilenet_v2": "mobilenet_v2",
    "mobilenet_v3_large": "mobilenet_v3_large", "mobilenet_v3_small": "mobilenet_v3_small",
    "shufflenet_v2_x0_5": "shufflenet_v2_x0_5", "shufflenet_v2_x1_0": "shufflenet_v2_x1_0",
    "shufflenet_v2_x1_5": "shufflenet_v2_x1_5", "shufflenet_v2_x2_0": "shufflenet_v2_x2_0",
    # B5-B7 with torchvision's BatchNorm eps 1e-3 (model.bn_eps in their configs: it changes the function)
    **{f"efficientnet_b{i}": f"efficientnet_b{i}" for i in range(8)},
}

# torchvision's bottleneck ResNets by (depth, groups, width_per_group, widen_factor) of models.resnet.ResNet.
BOTTLENECK_BUILDERS: dict[tuple[int, int, int, int], str] = {
    (50, 1, 64, 1): "resnet50", (101, 1, 64, 1): "resnet101", (152, 1, 64, 1): "resnet152",
    (50, 32, 4, 1): "resnext50_32x4d", (101, 32, 8, 1): "resnext101_32x8d", (101, 64, 4, 1): "resnext101_64x4d",
    (50, 1, 64, 2): "wide_resnet50_2", (101, 1, 64, 2): "wide_resnet101_2",
}


class VariantProblem(NamedTuple):
    """Why a torchvision file must not be loaded into a model, and what to build instead."""

    problem: str
    fix: str
    twin: str | None  # the config to use for torchvision's weights, when the zoo has it


def torchvision_variant_problem(model: nn.Module) -> VariantProblem | None:
    """``None`` when torchvision's weights mean the same network in ``model`` as in torchvision; else why not.

    The cases in the zoo: an Inception v3 without torchvision's input transform, and bottleneck blocks (in the part of ``model`` that is there, e.g. the kept
    layers of a cut network) with the stride on their first 1x1 conv (``stride_in_1x1: true``), which
    torchvision's ResNets, ResNeXts and wide ResNets put on the 3x3. Keys and shapes are not compared here.
    """
    from models.inception import InceptionV3
    from models.resnet import Bottleneck, ResNet

    if isinstance(model, InceptionV3) and not model.transform_input:
        return VariantProblem(
            "torchvision's inception_v3 weights were trained on inputs re-scaled to (x - 0.5) / 0.5, which its "
            "builder does inside the network (transform_input=True), and this model leaves its input as it is: "
            "the weights would load without a word and see differently scaled images.",
            "For torchvision's weights set model.transform_input=true (ImageNet's data.mean/std stay as they are).",
            "inception_v3")
    strided = [name for name, module in model.named_modules()
               if isinstance(module, Bottleneck) and tuple(module.conv1.stride) != (1, 1)]
    if not strided:
        return None
    root = next((module for module in model.modules() if isinstance(module, ResNet)), None)
    builder = _bottleneck_builder(root) if root is not None else None
    twin = TWINS.get(builder) if builder else None
    blocks = ", ".join(f"{name}.conv1" for name in strided[:3]) + (", ..." if len(strided) > 3 else "")
    theirs = f"torchvision's {builder}" if builder else "torchvision's ResNets, ResNeXts and wide ResNets"
    problem = (f"this model puts the stride of each downsampling bottleneck on its first 1x1 conv ({blocks}: "
               f"the paper's v1, stride_in_1x1: true) and {theirs} put{'s' if builder else ''} it on the 3x3 "
               "(v1.5): the two have identical state-dict keys and shapes, so torchvision's weights would load "
               "without a word and compute other features than the ones they were trained for, and a "
               "state_dict does not say which of the two it was saved from.")
    use = (f"model={twin} (torchvision's {builder}, stride on the 3x3)" if twin
           else "model.stride_in_1x1=false (torchvision's v1.5 placement)")
    fix = (f"For torchvision's weights use {use}; for a file saved from this very v1 model, fine-tune from "
           "its run folder instead (finetune.from=<run folder>), whose config records the architecture.")
    return VariantProblem(problem, fix, twin)


def _bottleneck_builder(model: nn.Module) -> str | None:
    """torchvision's builder whose layout ``model`` (a ``models.resnet.ResNet``) has, stride placement aside."""
    options = getattr(model, "block_options", None)
    if options is None or model.form != "imagenet" or not options.residual or options.preactivation \
            or options.shortcut != "B" or options.se_reduction:
        return None
    return BOTTLENECK_BUILDERS.get((model.depth, options.groups, options.width_per_group, options.widen_factor))
