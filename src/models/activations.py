"""The network's nonlinearity as one model option: ``activation: relu | leaky_relu | elu | tanh | sigmoid``.

Lecture 2's activation functions, each as the ``torch.nn`` module that computes it (the library's own
layers; nothing here is written by hand):

- ``relu``: ``max(0, x)`` (Nair & Hinton 2010), the default of every family that offers the option,
  because its paper uses it; a unit whose input stays negative is *dead* (zero output, zero gradient).
- ``leaky_relu``: ``max(0.01 x, x)`` (Maas et al. 2013 use slope 0.01, PyTorch's default; the lecture
  slide draws 0.1): a small gradient on the negative side, so no unit can die.
- ``elu``: ``x`` for ``x >= 0``, ``alpha (e^x - 1)`` below with ``alpha = 1`` (Clevert et al. 2016):
  smooth, negative outputs push the mean activation towards zero.
- ``tanh``, ``sigmoid``: the classic squashing functions; they saturate (flat tails, vanishing gradient)
  for large ``|x|``, and sigmoid outputs are never zero-centred.

The slope and alpha are fixed at those published values: one key, one choice list. The families' ``init:
kaiming`` uses the ReLU gain whatever the activation; ``init: xavier`` is the classic pair for tanh/sigmoid.
"""

from __future__ import annotations

from typing import Literal, get_args

from torch import nn

from models.errors import require_choice

# The type hint every constructor uses: the config schema reads the choices off it.
Activation = Literal["relu", "leaky_relu", "elu", "tanh", "sigmoid"]
ACTIVATIONS: tuple[str, ...] = get_args(Activation)
LEAKY_RELU_SLOPE = 0.01  # Maas, Hannun & Ng 2013
ELU_ALPHA = 1.0  # Clevert, Unterthiner & Hochreiter 2016


def require_activation(name: object) -> str:
    """``name`` if it is one of :data:`ACTIVATIONS`, else a ModelConfigError naming ``model.activation``."""
    require_choice("activation", name, ACTIVATIONS)
    return str(name)


def make_activation(name: str, inplace: bool = True) -> nn.Module:
    """A fresh module computing activation ``name``; ``inplace`` where torch offers it (not tanh/sigmoid).

    ``relu`` gives ``nn.ReLU(inplace=inplace)``, exactly the module the families used before the option
    existed, so default networks keep their modules, state dicts and outputs.
    """
    require_activation(name)
    if name == "relu":
        return nn.ReLU(inplace=inplace)
    if name == "leaky_relu":
        return nn.LeakyReLU(LEAKY_RELU_SLOPE, inplace=inplace)
    if name == "elu":
        return nn.ELU(ELU_ALPHA, inplace=inplace)
    return nn.Tanh() if name == "tanh" else nn.Sigmoid()
