"""ClassificationModule: the one LightningModule that trains every model in the zoo.

Cross-entropy (optional label smoothing), auxiliary-classifier losses during training only, top-1/top-5
accuracy from torchmetrics, and errors in percent as the papers report them. Optional adversarial training
(``module.adversarial=fgsm|pgd``; the attack is in :mod:`experiments.training.adversarial`). Metrics are logged as
tensors and reduced by Lightning at epoch end, so logging never forces a device sync per step.

Per step the module adds to the plain loop only what its features need (issue 19): the epoch's loss and
error sums, accumulated in place on the device, and one ``self.log`` every ``log_every_n_steps`` steps.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from experiments.training.adversarial import ATTACKS, InputBounds, attack
from experiments.training.optim import build_optimizer, build_scheduler

_NORM_WITH_STATS = (nn.modules.batchnorm._NormBase,)  # BatchNorm, InstanceNorm, SyncBatchNorm


class ClassificationModule(pl.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        optimizer: DictConfig,
        scheduler: DictConfig | None = None,
        label_smoothing: float = 0.0,
        aux_loss_weights: Sequence[float] = (0.3, 0.3),
        channels_last: bool = False,
        lr_scales: Mapping[str, float] | None = None,
        example_input_shape: Sequence[int] | None = None,
        adversarial: str | None = None,
        adversarial_epsilon: float = 0.1,
        adversarial_steps: int = 7,
        adversarial_weight: float = 0.5,
        data_mean: Sequence[float] | None = None,
        data_std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        if example_input_shape is not None:
            # One image of the configured shape: Lightning's model summary runs it (in eval mode, without
            # gradients) to print each layer's input/output sizes and FLOPs instead of "Total FLOPs: 0".
            self.example_input_array = torch.zeros(1, *example_input_shape)
        # Fine-tuning (experiments.training.finetune): the lr multiplier of each trainable parameter of `model`.
        self.lr_scales = dict(lr_scales) if lr_scales is not None else None
        self.num_classes = num_classes
        self.optimizer_cfg, self.scheduler_cfg = optimizer, scheduler
        self.label_smoothing = float(label_smoothing)
        self.aux_loss_weights = [float(w) for w in aux_loss_weights]
        top_k = min(5, num_classes)
        self.metrics = nn.ModuleDict({
            f"{stage}_{name}": MulticlassAccuracy(num_classes, top_k=k, average="micro")
            for stage in ("val", "test")
            for name, k in (("top1", 1), ("top5", top_k))
        })
        self.best_val_err = math.inf
        self.channels_last = channels_last
        self._train_sums: torch.Tensor | None = None  # [loss sum, errors] of the epoch so far, on the device
        self._train_count = 0  # samples in those sums (known on the host: no device value needed)
        self._sum_views: tuple[torch.Tensor, ...] = ()
        # Adversarial training (experiments.training.adversarial): loss = (1 - w) clean + w adversarial.
        if adversarial is not None and adversarial not in ATTACKS:
            raise ValueError(f"module.adversarial={adversarial!r}: use one of {', '.join(ATTACKS)} or null")
        self.adversarial = adversarial
        self.adversarial_epsilon = float(adversarial_epsilon)
        self.adversarial_steps = int(adversarial_steps)
        self.adversarial_weight = float(adversarial_weight)
        self.input_bounds = (InputBounds(data_mean if data_mean is not None else [0.0],
                                         data_std if data_std is not None else [1.0])
                             if adversarial is not None else None)

    def __setattr__(self, name: str, value) -> None:
        # Lightning sets ``_current_fx_name`` before and after every hook it calls, some 40 times a step;
        # nn.Module.__setattr__ (parameter/buffer/module bookkeeping) makes each ~1 us. It is a plain
        # string attribute, never a parameter, buffer or submodule: store it directly.
        if name == "_current_fx_name":
            self.__dict__[name] = value
        else:
            super().__setattr__(name, value)

    def _layout(self, images: torch.Tensor) -> torch.Tensor:
        """NHWC inputs for a channels_last model, so its convolutions need no layout conversion.

        (Not in ``on_after_batch_transfer``: Lightning runs only the DataModule's when both define it.)
        """
        if self.channels_last and images.ndim == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def train(self, mode: bool = True):
        """Train mode, except for frozen normalisation layers: a BatchNorm whose parameters are all frozen
        (fine-tuning) stays in eval mode, so its running statistics never change. Lightning calls this at
        every epoch start and after validation; its mode capture/restore keeps the same state."""
        super().train(mode)
        if mode:
            for module in self.model.modules():
                if isinstance(module, _NORM_WITH_STATS):
                    params = list(module.parameters(recurse=False))
                    if params and not any(p.requires_grad for p in params):
                        module.eval()  # (experiments.training.finetune also hooks them: eval in every forward)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out[0] if isinstance(out, (tuple, list)) else out

    def loss(self, outputs, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Main loss plus weighted auxiliary losses; returns (loss, main logits)."""
        if isinstance(outputs, (tuple, list)):
            logits, aux_outputs = outputs[0], outputs[1:]
        else:
            logits, aux_outputs = outputs, ()
        loss = F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        for weight, aux in zip(self.aux_loss_weights, aux_outputs):
            if aux is not None:
                loss = loss + weight * F.cross_entropy(aux, targets, label_smoothing=self.label_smoothing)
        return loss, logits

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        if self.adversarial is not None and self.adversarial_weight > 0:
            loss, logits = self._adversarial_loss(images, targets)
        else:
            loss, logits = self.loss(self.model(self._layout(images)), targets)
        self._accumulate(loss.detach(), logits.detach(), targets)
        trainer = self.trainer
        # Only on Lightning's logging steps: the logger reads the value on the host there (a device sync
        # on a GPU), and a self.log call costs ~0.2 ms of Python, a visible share of a small model's step.
        if (trainer.global_step + 1) % max(1, trainer.log_every_n_steps) == 0:
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False)
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._log_train_epoch()
        return loss

    def _accumulate(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Add the batch to the epoch's sums in place on the device (no sync, no new tensor but the error
        count); they are logged once, on the epoch's last batch."""
        n = len(targets)
        if self._train_sums is None:
            self._train_sums, self._train_count = torch.zeros(2, device=loss.device), 0
            self._sum_views = self._train_sums.unbind()  # (loss sum, errors): views made once, not per step
        loss_sum, errors = self._sum_views
        loss_sum.add_(loss, alpha=n)
        errors.add_(logits.argmax(dim=1).ne(targets).sum())
        self._train_count += n

    def _adversarial_loss(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1 - w) clean loss + w loss on the attacked batch (Goodfellow et al.'s mix; w = 1 is Madry et al.'s,
        with no clean pass). The logits returned (train/err) are the clean ones, or the adversarial ones at w = 1."""
        steps = self.adversarial_steps if self.adversarial == "pgd" else 0
        adversarial = attack(self.model, images, targets, self.adversarial, self.adversarial_epsilon,
                             self.input_bounds, steps=max(1, steps), layout=self._layout)
        w = self.adversarial_weight
        if w >= 1:
            return self.loss(self.model(self._layout(adversarial)), targets)
        clean_loss, logits = self.loss(self.model(self._layout(images)), targets)
        adv_loss, _ = self.loss(self.model(self._layout(adversarial)), targets)
        return (1 - w) * clean_loss + w * adv_loss, logits

    def _epoch_sums(self) -> torch.Tensor:
        """[loss sum, errors, samples] of the epoch so far (the checkpoint's and the reduction's format)."""
        count = torch.tensor([float(self._train_count)], device=self._train_sums.device)
        return torch.cat([self._train_sums, count])

    def _log_train_epoch(self) -> None:
        """Epoch mean loss and error rate (exact: sums over samples, reduced over processes)."""
        if self._train_sums is None:
            return
        loss_sum, errors, count = self.trainer.strategy.reduce(self._epoch_sums(), reduce_op="sum")
        self._train_sums = None
        self.log("train/loss", loss_sum / count, on_step=False, on_epoch=True)
        self.log("train/err", 100 * errors / count, on_step=False, on_epoch=True)

    def on_train_epoch_end(self) -> None:
        self._log_train_epoch()  # an epoch cut short (limit_train_batches, max_steps) has no last batch

    def _evaluate(self, batch, stage: str) -> None:
        images, targets = batch
        logits = self(self._layout(images))
        loss = F.cross_entropy(logits, targets)
        self.metrics[f"{stage}_top1"].update(logits, targets)
        self.metrics[f"{stage}_top5"].update(logits, targets)
        self.log(f"{stage}/loss", loss, on_epoch=True, batch_size=len(targets), sync_dist=True)

    def _log_accuracy(self, stage: str) -> float:
        top1 = self.metrics[f"{stage}_top1"].compute()
        top5 = self.metrics[f"{stage}_top5"].compute()
        self.metrics[f"{stage}_top1"].reset()
        self.metrics[f"{stage}_top5"].reset()
        # Already reduced over processes by torchmetrics; sync_dist only averages identical values.
        self.log(f"{stage}/acc", 100 * top1, sync_dist=True)
        self.log(f"{stage}/err", 100 * (1 - top1), sync_dist=True)
        self.log(f"{stage}/err5", 100 * (1 - top5), sync_dist=True)
        return float(100 * (1 - top1))

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        err = self._log_accuracy("val")
        if not self.trainer.sanity_checking:
            self.best_val_err = min(self.best_val_err, err)
            self.log("val/err_best", self.best_val_err, sync_dist=True)

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_accuracy("test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self(batch[0]).softmax(dim=1)

    def configure_optimizers(self):
        optimizer = build_optimizer(self.optimizer_cfg, self.model, self.lr_scales)
        if self.scheduler_cfg is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, math.ceil(self.trainer.num_training_batches / self.trainer.accumulate_grad_batches))
        scheduler = build_scheduler(self.scheduler_cfg, optimizer, total, per_epoch)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    # Training state beyond the weights: the best validation error so far, and the running sums of an
    # epoch stopped midway (so its train/loss and train/err still cover every batch after a resume).
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["best_val_err"] = self.best_val_err
        checkpoint["train_epoch_sums"] = None if self._train_sums is None else self._epoch_sums().cpu()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.best_val_err = float(checkpoint.get("best_val_err", math.inf))
        sums = checkpoint.get("train_epoch_sums")
        self._train_sums = None if sums is None else sums[:2].to(self.device, torch.float32)
        self._sum_views = () if sums is None else self._train_sums.unbind()
        self._train_count = 0 if sums is None else round(float(sums[2]))


# Lightning asks inspect for training_step's signature at every step (does it take batch_idx?), ~8 us of
# Python each time; a function's ``__signature__`` is what inspect returns first, so compute it once.
ClassificationModule.training_step.__signature__ = inspect.signature(ClassificationModule.training_step)
