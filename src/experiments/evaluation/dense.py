"""Dense evaluation (Simonyan & Zisserman 2015, sec. 3.2; Sermanet et al. 2014, OverFeat): the network slid
over a larger test image in one pass, its class score map averaged.

VGG tests "densely": the FC layers are turned into convolutions (the first into a conv with the size of
the map it flattens, the others into 1x1 convs; :func:`models.fully_conv.to_fully_convolutional`), the
whole test image, isotropically rescaled so its shorter side is Q, goes through the converted network,
and the resulting class score map is spatially averaged into one vector of class scores. The soft-max
posteriors of the image and of its horizontal mirror are then averaged. Each cell of the score map is
the network applied to one ``S x S`` window (``S`` the training size) at the conversion's stride; for a
network of unpadded convolutions (LeNet-5) it is exactly the network on that crop, so the average is the
mean of its logits over every window, computed without cutting a single crop. Where the convolutions
pad (VGG, AlexNet, ZFNet), a window's border sees the neighbouring pixels instead of the crop's zero
padding: the larger receptive field Simonyan & Zisserman name as what dense evaluation adds over crops.
At ``Q = S`` there is one window and dense evaluation is the plain network.

Two kinds of network are dense-evaluated here (:func:`dense_scorer`):

* ``fully convolutional``: VGG, AlexNet, ZFNet, LeNet-5 (an FC classifier over a known feature map),
  converted as above;
* ``global pooling``: ResNet, DenseNet, MobileNet, GoogLeNet, SqueezeNet, ... end in global average
  pooling followed by position-wise layers, so they already ARE dense: run unchanged on the larger image,
  their pooling averages the class scores ``W f(p) + b`` of every position ``p`` of the larger final map
  (the 1x1-conv reading of their FC layer; its map is the CAM of Zhou et al. 2016). Nothing is
  converted; the property is checked numerically on the model (its head applied to the whole map equals
  the mean of its head applied to each position), not assumed from its name.

Any other network (an FC head over an adaptively pooled map, a blueprint net without ``feature_shape``) is
refused with a :class:`~experiments.core.errors.UserError` naming the key that asked for it.

``eval.dense=true`` adds a ``dense`` row per run to the multi-crop table of :mod:`.ensemble` (and to its
JSON record), so dense and 1/10/144-crop errors are read side by side. torch is imported inside the
functions, so the command line checks the ``eval.dense*`` keys instantly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from experiments.core.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

# VGG's single-scale test: shorter side Q = 256 for a network trained on 224-pixel crops of S = 256 images.
DEFAULT_DENSE_SCALE = 256 / 224
CONVERTED, GLOBAL_POOLING = "fully convolutional", "global pooling"


@dataclass
class DenseScorer:
    """A trained classifier read as a class-score-map function of an image of any size >= ``native``.

    ``kind`` says how (module docstring); ``stride`` is the distance in input pixels between neighbouring
    windows of a converted network (the product of its layers' strides), ``None`` for a global-pooling one.
    """

    model: nn.Module  # the converted copy, or the network itself (global pooling)
    kind: str
    native: int
    stride: int | None

    def score_maps(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, classes, h, w)`` class scores (logits) of every window (converted) or position (pooling)."""
        if self.kind == CONVERTED:
            return self.model(x)
        return position_scores(self.model, self.model.forward_features(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, classes)``: the spatial mean of the score map (for a pooling network, its own forward)."""
        if self.kind == CONVERTED:
            return self.model(x).mean(dim=(2, 3))
        return self.model(x)

    def probabilities(self, x: torch.Tensor, flip: bool = True) -> torch.Tensor:
        """Soft-max of the averaged scores, averaged with the mirrored image's when ``flip`` (VGG)."""
        probs = self.logits(x).double().softmax(dim=1)
        if flip:
            probs = (probs + self.logits(x.flip(-1)).double().softmax(dim=1)) / 2
        return probs


def position_scores(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """A global-pooling network's head applied to each position of its ``(N, C, h, w)`` feature map on its
    own (a 1x1 map): ``(N, classes, h, w)``. One batched call; the head's pooling is the identity at 1x1."""
    n, c, h, w = features.shape
    cells = features.permute(0, 2, 3, 1).reshape(n * h * w, c, 1, 1)
    return model.forward_head(cells).reshape(n, h, w, -1).permute(0, 3, 1, 2)


def total_stride(model: nn.Module) -> int:
    """Input pixels between neighbouring output cells: the product of the conv and pooling strides."""
    from torch import nn

    stride = 1
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            value = module.stride
            stride *= int(value[0] if isinstance(value, tuple) else value)
    return stride


def dense_scorer(model: nn.Module, native: int, in_channels: int, key: str) -> DenseScorer:
    """The network as a score-map function: converted when it has an FC head over a known map, itself
    when it ends in global average pooling; otherwise a UserError under ``key``.

    The original model is left untouched (the conversion copies its layers)."""
    import torch

    from models.errors import ModelConfigError
    from models.fully_conv import to_fully_convolutional
    from models.interface import has_interface

    parameter = next(model.parameters())
    try:
        converted = to_fully_convolutional(model).eval().to(device=parameter.device, dtype=parameter.dtype)
        return DenseScorer(converted, CONVERTED, native, total_stride(converted))
    except ModelConfigError:
        pass
    if has_interface(model):
        # A probe one third larger than the training size: a head that pools globally and then acts on
        # each position alone gives the mean of its per-position scores; an FC head over an adaptively
        # pooled map (torchvision's AlexNet/VGG layout) does not.
        size = native + max(2, native // 3)
        probe = torch.randn(2, in_channels, size, size, generator=torch.Generator().manual_seed(0))
        probe = probe.to(device=parameter.device, dtype=parameter.dtype)
        training = model.training
        model.eval()
        try:
            with torch.no_grad():
                features = model.forward_features(probe)
                whole = model.forward_head(features) if features.ndim == 4 else None
                parts = position_scores(model, features).mean(dim=(2, 3)) if whole is not None else None
        except (RuntimeError, ValueError):  # a head that cannot take a 1x1 map: not position-wise
            whole = parts = None
        finally:
            model.train(training)
        if whole is not None and parts is not None and torch.allclose(whole, parts, rtol=1e-4, atol=1e-4):
            return DenseScorer(model, GLOBAL_POOLING, native, None)
    raise UserError(key, type(model).__name__, "cannot be slid over a larger image: it has neither an FC "
                    "classifier over a known feature map (VGG, AlexNet, ZFNet, LeNet-5, which are converted to "
                    "convolutions) nor global average pooling before a position-wise head (ResNet, DenseNet, "
                    "MobileNet, GoogLeNet, SqueezeNet, which are already dense), so it has no class score map.",
                    "Test it with eval.crops=[1,10,144] instead, or train one of those families.")


@dataclass
class DenseSettings:
    """How large the dense test image is: shorter side ``size`` pixels, or ``scale`` times the training
    size (``DEFAULT_DENSE_SCALE`` when neither is given); ``flip`` averages the mirrored image's posteriors."""

    scale: float | None = None
    size: int | None = None
    flip: bool = True

    def side(self, native: int) -> int:
        """The shorter side Q for a network trained at ``native`` pixels; refused below ``native``."""
        if self.size is not None:
            if self.size < native:
                raise UserError("eval.dense_size", self.size, f"is smaller than the {native} pixels the network "
                                "was trained on: the converted network needs at least one whole window.",
                                f"Use eval.dense_size={native} or more (or eval.dense_scale >= 1).")
            return int(self.size)
        return max(native, round(native * (self.scale if self.scale is not None else DEFAULT_DENSE_SCALE)))

    def describe(self) -> dict[str, Any]:
        return {"scale": self.scale if self.size is None else None, "size": self.size, "flip": self.flip}


def dense_inputs(images: torch.Tensor, pipeline, side: int) -> torch.Tensor:
    """An in-memory test batch (native uint8 or float) as dense inputs: shorter side ``side``, normalised.

    As the multi-crop views do (:class:`.ensemble.PipelineViews`): a ``resize``-mode image is enlarged from
    its native pixels (sharper than enlarging the model's input); in ``pad`` mode the padded field the
    model saw is enlarged. At the training size it is exactly the run's own view."""
    import torch
    from torchvision.transforms.v2 import functional as TF

    x = images.float().div(255) if images.dtype == torch.uint8 else images.float()
    if side == pipeline.image_size or pipeline.resize_mode == "pad":
        x = pipeline.fit_size(x)
    if x.shape[-1] != side or x.shape[-2] != side:
        x = TF.resize(x, [side], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return (x - pipeline.mean.to(x.device)) / pipeline.std.to(x.device)


def folder_input(raw: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, side: int) -> torch.Tensor:
    """One decoded image-folder image (uint8, its own size) with its shorter side resized to ``side``."""
    from torchvision.transforms.v2 import functional as TF

    x = TF.resize(raw.float().div(255).unsqueeze(0), [side], interpolation=TF.InterpolationMode.BILINEAR,
                  antialias=True)
    return (x - mean.to(x.device)) / std.to(x.device)


@dataclass
class DenseView:
    """``eval.dense``'s row of the multi-crop table (:class:`.ensemble.ExtraView`): each run's test set,
    dense-evaluated; ``members`` records, per run, what was done (for the JSON record)."""

    settings: DenseSettings
    name: str = "dense"
    members: list[dict[str, Any]] = field(default_factory=list)

    def probabilities(self, trained, run: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels, dense posteriors ``[N, classes]``) of a loaded run on its test set, in loader order."""
        import torch

        from experiments.evaluation.ensemble import FolderViews, PipelineViews, eval_trainer, views_for

        data = trained.cfg.data
        native = int(data.image_size)
        side = self.settings.side(native)
        scorer = dense_scorer(trained.model, native, int(data.in_channels), "eval.dense")
        views = views_for(trained.datamodule, run, [1])
        if not isinstance(views, (PipelineViews, FolderViews)):
            raise UserError("eval.dense", True, f"needs the unresized test images of {run}, and its "
                            f"{type(trained.datamodule).__name__} hands over finished model inputs only.",
                            "Use a dataset held in memory (data.base.InMemoryDataModule) or an image folder.")
        predictor = _dense_predictor(scorer, views, side, self.settings.flip)
        outputs = eval_trainer(trained.cfg, trained.run_dir).predict(predictor, dataloaders=views.loader())
        labels = torch.cat([o["labels"] for o in outputs])
        probs = torch.cat([o["probs"] for o in outputs])
        example = outputs[0]["map"] if outputs else None
        self.members.append({"run_dir": str(trained.run_dir), "conversion": scorer.kind, "side": side,
                             "stride": scorer.stride, "score_map": example})
        return labels, probs

    def record(self) -> dict[str, Any]:
        return {**self.settings.describe(), "members": self.members}


def _dense_predictor(scorer: DenseScorer, views, side: int, flip: bool):
    """A LightningModule around the scorer, so the Trainer supplies the run's device and precision."""
    import pytorch_lightning as pl
    import torch

    from experiments.evaluation.ensemble import PipelineViews

    class DensePredictor(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.scorer_model = scorer.model  # registered, so the Trainer moves it

        def predict_step(self, batch, batch_idx: int) -> dict[str, Any]:
            inputs, labels = batch
            dtype = next(self.scorer_model.parameters()).dtype
            if isinstance(views, PipelineViews):
                with torch.autocast(self.device.type, enabled=False):  # as the datamodule's own transform
                    batches = [dense_inputs(inputs, views.pipeline, side)]
            else:  # image folders: every decoded image has its own size, so one at a time
                with torch.autocast(self.device.type, enabled=False):
                    batches = [folder_input(raw.to(self.device), views.mean, views.std, side) for raw in inputs[1]]
            probs = torch.cat([scorer.probabilities(x.to(self.device, dtype), flip) for x in batches])
            out = {"labels": labels.cpu(), "probs": probs.cpu(), "map": None}
            if batch_idx == 0:  # the score map's size, for the record
                out["map"] = list(scorer.score_maps(batches[0][:1].to(self.device, dtype)).shape[-2:])
            return out

    return DensePredictor()
