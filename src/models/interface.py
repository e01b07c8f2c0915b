"""One model interface for every family in the zoo, the one timm's models share.

Tools that work on "any classifier" (transfer learning, feature analyses, linear probes, t-SNE) need the
same three things from every network: the feature map before pooling, the penultimate vector, and the
final classifier layer (to read its weights, or to replace it for a new label set). Finding them by
tracing a forward pass works for most networks but guesses (the last Linear/Conv2d that runs, the map
that feeds the global pool) and breaks on an inplace ReLU or a module called twice. The zoo says it
instead, through :class:`Classifier`:

``forward_features(x)``
    The feature map before global pooling and the classifier: a ResNet's last stage (plus the final
    BN-ReLU of a pre-activation net), the conv ``features`` of VGG, AlexNet, ZFNet, LeNet, SqueezeNet and
    MobileNet, DenseNet's maps after the final norm + ReLU, the last inception block of GoogLeNet and
    Inception v3. A model without a spatial map says so in its docstring and returns the tensor that
    enters its head.
``forward_head(features, pre_logits=False)``
    Pooling, flatten, dropout and FC layers, then the final classifier layer. With ``pre_logits=True``
    it returns the *input* of the final classifier layer (VGG's fc7 output, a ResNet's pooled vector):
    shape ``(N, num_features)``.
``num_features``
    The width of that pre-logits vector: the ``in_features`` of the final classifier layer.
``get_classifier()`` / ``reset_classifier(num_classes, global_pool=None)``
    The final classifier layer; replace it (and any auxiliary classifier) by a freshly initialised one
    with ``num_classes`` outputs, under the same state-dict keys; ``num_classes=0`` removes it (timm's
    convention: ``forward`` then returns the pre-logits vector).

``forward(x)`` is ``forward_head(forward_features(x))`` (in eval mode for the nets with auxiliary heads,
whose training-mode forward also returns the auxiliary logits), so there is one definition of what the
network computes and the two halves can never drift apart.

:class:`ClassifierMixin` is the shared half every zoo family inherits (instead of ``nn.Module``): it
defines ``forward``, ``num_features``, ``get_classifier`` and ``reset_classifier`` from the layer names
a family declares, so a family only writes its two ``forward_*`` methods. The module-level helpers
:func:`classifier_module` and :func:`feature_module` answer "which layer?" for tools, and return ``None``
for a model from outside the zoo that lacks the interface (the caller falls back to tracing).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from models.errors import require_positive_int
from models.init import init_weights


@runtime_checkable
class Classifier(Protocol):
    """What every zoo model provides (timm's names and meanings, so timm models satisfy it too)."""

    @property
    def num_features(self) -> int:
        """Width of the pre-logits vector (the final classifier layer's input features)."""
        ...

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map before global pooling / the classifier."""
        ...

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Logits from ``forward_features``'s output; with ``pre_logits``, the final layer's input."""
        ...

    def get_classifier(self) -> nn.Module:
        """The final classifier layer (a Linear, or SqueezeNet's 1x1 conv)."""
        ...

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the final (and auxiliary) classifier layers by fresh ones with ``num_classes`` outputs
        (0: no classifier, ``forward`` returns the pre-logits vector)."""
        ...


class ClassifierMixin(nn.Module):
    """The shared half of :class:`Classifier` for the zoo's families; subclass it instead of ``nn.Module``.

    A family implements ``forward_features`` and ``forward_head`` and declares, as class attributes or
    properties (names are qualified, as in ``named_modules()``):

    - ``classifier_name``: the final classifier layer (``"fc"``, ``"classifier.6"``, ...);
    - ``aux_classifier_names``: the final layers of auxiliary heads, reset together with the main one;
    - ``feature_module_name``: the module whose output *is* ``forward_features``'s output, so tools that
      hook a layer by name (CAM, unit visualisation) hook the right one;
    - ``init_scheme``: the :func:`models.init.init_weights` scheme the constructor used, so a reset
      classifier starts like the original one did (``init_classifier`` adds a family's special case).
    """

    classifier_name: str = "fc"
    aux_classifier_names: tuple[str, ...] = ()
    feature_module_name: str = "features"
    init_scheme: str = "default"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``forward_head(forward_features(x))``: the network is defined once, by its two halves."""
        return self.forward_head(self.forward_features(x))

    @property
    def num_features(self) -> int:
        return input_width(self.get_classifier())

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self.classifier_name)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Fresh final and auxiliary classifier layers with ``num_classes`` outputs.

        Same state-dict keys, device, dtype and train/eval mode; every other layer is untouched.
        ``num_classes=0`` is timm's "no classifier": each of those layers becomes a :class:`NoClassifier`
        and ``forward`` returns the pre-logits vector (``num_features`` wide); a later reset with ``n > 0``
        builds the layers again. ``global_pool`` is timm's argument; the zoo's models keep their own
        pooling (None).
        """
        if global_pool is not None:
            raise ValueError(f"reset_classifier(global_pool={global_pool!r}): the zoo's models keep the pooling "
                             "their paper gives it. Pass None; for the unpooled map use forward_features(x).")
        if num_classes != 0:
            require_positive_int("num_classes", num_classes)
        for name in (self.classifier_name, *self.aux_classifier_names):
            old = self.get_submodule(name)
            self.set_submodule(name, self._new_classifier(old, num_classes).train(old.training))

    def _new_classifier(self, old: nn.Module, num_classes: int) -> nn.Module:
        if num_classes == 0:
            return old if isinstance(old, NoClassifier) else NoClassifier(old)
        layer = with_outputs(old, num_classes)
        if isinstance(old, NoClassifier):  # built from the meta-device template: give it memory here
            # the model's device and dtype now (it may have moved since), or, for a model that has no
            # other tensor (the linear classifier), those of the replaced layer
            reference = next(itertools.chain(self.parameters(), self.buffers()), None)
            device = old.device if reference is None else reference.device
            dtype = old.dtype if reference is None or not reference.is_floating_point() else reference.dtype
            layer = layer.to_empty(device=device).to(dtype=dtype)
            for module in layer.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()  # also a BatchNorm's running statistics
        self.init_classifier(layer)
        return layer

    def init_classifier(self, layer: nn.Module) -> None:
        """Initialise a new classifier layer as the constructor initialised the model."""
        init_weights(layer, self.init_scheme)


class FeaturesClassifierMixin(ClassifierMixin):
    """torchvision's VGG / AlexNet / MobileNet layout: ``features`` -> ``avgpool`` -> flatten -> ``classifier``.

    ``features`` is the conv part (its output is the feature map), ``classifier`` an ``nn.Sequential``
    of FC layers, activations and dropouts whose last layer is the final classifier layer, so the
    pre-logits vector is the output of everything before it (VGG's fc7 after its dropout).
    """

    features: nn.Module
    avgpool: nn.Module
    classifier: nn.Sequential

    @property
    def classifier_name(self) -> str:
        return f"classifier.{len(self.classifier) - 1}"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return run_classifier(self.classifier, torch.flatten(self.avgpool(features), 1), pre_logits)


class NoClassifier(nn.Identity):
    """The place of a final classifier layer after ``reset_classifier(0)`` (timm's convention): it passes
    the pre-logits vector through. It remembers the width it takes (``num_features`` still answers) and
    the layer it replaced, as a meta-device copy (no memory, not a submodule, so no state-dict keys), from
    which a later ``reset_classifier(n)`` builds a layer like it (a Linear, SqueezeNet's 1x1 conv, ...)."""

    def __init__(self, replaced: nn.Module) -> None:
        super().__init__()
        self.in_features = input_width(replaced)
        tensor = next(itertools.chain(replaced.parameters(), replaced.buffers()))
        self.device, self.dtype = tensor.device, tensor.dtype
        self.__dict__["replaced"] = with_outputs(replaced, 1, device="meta")  # its shape and kind, no memory

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}"


def run_classifier(classifier: nn.Sequential, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
    """Run a classifier ``nn.Sequential`` whose last layer is the final one; stop before it for pre-logits."""
    *body, final = classifier
    for layer in body:
        x = layer(x)
    return x if pre_logits else final(x)


def input_width(layer: nn.Module) -> int:
    """Input features of a classifier layer: a Linear's ``in_features``, a conv's ``in_channels``."""
    if isinstance(layer, (nn.Linear, NoClassifier)):
        return layer.in_features
    if isinstance(layer, nn.Conv2d):
        return layer.in_channels
    if isinstance(layer, nn.Sequential):
        return input_width(layer[0])
    raise TypeError(f"{type(layer).__name__} is not a classifier layer (Linear, Conv2d or a Sequential of them)")


def with_outputs(layer: nn.Module, num_classes: int, device: torch.device | str | None = None) -> nn.Module:
    """A new layer like ``layer`` (inputs, bias, kernel, device, dtype) with ``num_classes`` outputs.

    A Linear, a (non-grouped) Conv2d, a BatchNorm1d over the classes, or an ``nn.Sequential`` of them whose
    every layer ends in the classes (Inception v3's BN-auxiliary head: Linear then BatchNorm1d), rebuilt
    under the same child names so the state-dict keys stay. Weights are PyTorch's defaults: the caller
    initialises them.
    """
    if isinstance(layer, NoClassifier):
        layer = layer.replaced
    tensor = next(iter([*layer.parameters(), *layer.buffers()]))
    factory = {"device": tensor.device if device is None else device, "dtype": tensor.dtype}
    if isinstance(layer, nn.Linear):
        return nn.Linear(layer.in_features, num_classes, bias=layer.bias is not None, **factory)
    if isinstance(layer, nn.Conv2d) and layer.groups == 1:
        return nn.Conv2d(layer.in_channels, num_classes, layer.kernel_size, stride=layer.stride,
                         padding=layer.padding, dilation=layer.dilation, bias=layer.bias is not None, **factory)
    if isinstance(layer, nn.BatchNorm1d):
        return nn.BatchNorm1d(num_classes, eps=layer.eps, momentum=layer.momentum, affine=layer.affine,
                              track_running_stats=layer.track_running_stats, **factory)
    if isinstance(layer, nn.Sequential):
        return nn.Sequential(OrderedDict((name, with_outputs(child, num_classes, device))
                                         for name, child in layer.named_children()))
    raise TypeError(f"cannot resize a {type(layer).__name__} to new classes")


def has_interface(model: nn.Module) -> bool:
    """Whether ``model`` provides :class:`Classifier` (every zoo model does, and timm's models)."""
    return isinstance(model, Classifier)


def classifier_module(model: nn.Module) -> tuple[str, nn.Module] | None:
    """``(qualified name, layer)`` of the final classifier layer, or ``None`` without the interface.

    The layer whose weights map ``forward_head(..., pre_logits=True)`` to the logits: read its weights
    (CAM), replace it (fine-tuning) or freeze everything else. The name is the one in
    ``model.named_modules()`` and ``state_dict()`` keys (``"fc"``, ``"classifier.6"``,
    ``"classifier.1"`` for SqueezeNet's 1x1 conv). A model that has ``get_classifier()`` but no
    ``classifier_name`` (a timm model) is searched for the layer by identity. ``None`` means "not known
    here": fall back to tracing (the last Linear/Conv2d an eval forward pass runs).
    """
    if not has_interface(model):
        return None
    name = getattr(model, "classifier_name", None)
    if name is not None:
        return name, model.get_submodule(name)
    layer = model.get_classifier()
    return next(((n, m) for n, m in model.named_modules() if m is layer and n), None)


def feature_module(model: nn.Module) -> tuple[str, nn.Module] | None:
    """``(qualified name, module)`` whose output is ``model.forward_features(x)``, or ``None``.

    For tools that hook a layer by name (class activation maps, maximally activating images): the last
    spatial map before global pooling, as a module run once per forward pass (``"features"``,
    ``"layer4"``, ``"relu"`` for DenseNet, ``"final_relu"`` for a pre-activation ResNet). Tools that only
    need the tensor can call ``model.forward_features(x)`` directly. ``None`` for a model that does not
    declare ``feature_module_name`` (outside the zoo): fall back to tracing.
    """
    name = getattr(model, "feature_module_name", None) if has_interface(model) else None
    if name is None:
        return None
    return name, model.get_submodule(name)
