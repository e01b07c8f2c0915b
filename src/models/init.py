"""Weight initialisation schemes the classic papers use, as one model-level option.

- ``kaiming``: He et al. 2015 with the ReLU gain, the ResNet/VGG-with-BN default: fan-out for convs
  (torchvision's choice, the paper's backward form) and fan-in for linear layers (the paper's forward
  form). Fan-out on a 10-way classifier would mean std sqrt(2/10): a CIFAR ResNet-56 then starts at a
  cross-entropy of about 11 instead of about 4.6 and spends its first epochs undoing it.
- ``xavier``: Glorot & Bengio 2010, uniform; the choice for tanh/sigmoid nets such as LeNet.
- ``gaussian``: N(0, 0.01^2), AlexNet's and VGG-A's scheme.
- ``default``: leave PyTorch's own layer initialisation untouched.
Biases start at zero; BatchNorm starts as the identity (weight 1, bias 0).
"""

from torch import nn

from models.errors import require_choice

INIT_SCHEMES = ("kaiming", "xavier", "gaussian", "default")
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm)


def init_weights(module: nn.Module, scheme: str = "kaiming", gaussian_std: float = 0.01) -> nn.Module:
    """Initialise every conv/linear/norm layer of ``module`` in place and return it."""
    require_choice("init", scheme, INIT_SCHEMES)
    if scheme == "default":
        return module
    for layer in module.modules():
        if isinstance(layer, _WEIGHTED):
            if scheme == "kaiming":
                mode = "fan_in" if isinstance(layer, nn.Linear) else "fan_out"
                nn.init.kaiming_normal_(layer.weight, mode=mode, nonlinearity="relu")
            elif scheme == "xavier":
                nn.init.xavier_uniform_(layer.weight)
            else:
                nn.init.normal_(layer.weight, mean=0.0, std=gaussian_std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, _NORMS) and layer.weight is not None:
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
    return module
