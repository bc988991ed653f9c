"""AdamW without weight decay on 1-D parameters, and the warm-up + poly learning-rate schedule."""

from __future__ import annotations

from torch import nn
from torch.optim import AdamW, Optimizer
from torch.optim.lr_scheduler import LRScheduler


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> AdamW:
    """AdamW where weight decay applies only to parameters with two or more dimensions."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return AdamW(groups, lr=lr, betas=betas, eps=eps)


class WarmupPolyLR(LRScheduler):
    """Per-iteration schedule: linear warm-up from ``warmup_ratio`` to 1, then ``(1 - progress) ** power``.

    ``total_steps`` is the number of scheduler steps in the run; stepping past it keeps the last
    factor's floor at 0.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup_steps: int,
        warmup_ratio: float = 0.1,
        power: float = 0.9,
        last_epoch: int = -1,
    ) -> None:
        if total_steps <= 0:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        self.total_steps = total_steps
        self.warmup_steps = min(max(warmup_steps, 0), total_steps - 1)
        self.warmup_ratio = warmup_ratio
        self.power = power
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        """Multiplier of the base learning rate at iteration ``step``."""
        if step < self.warmup_steps:
            return self.warmup_ratio + (1.0 - self.warmup_ratio) * step / self.warmup_steps
        progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        return max(1.0 - progress, 0.0) ** self.power

    def get_lr(self) -> list[float]:
        return [base_lr * self.factor(self.last_epoch) for base_lr in self.base_lrs]

    def state_dict(self) -> dict:
        """Only the position in the schedule: its shape (total and warm-up steps, ratio, power)
        always comes from the current run's config, so a resumed run with more epochs keeps training."""
        return {key: value for key, value in super().state_dict().items()
                if key not in ("total_steps", "warmup_steps", "warmup_ratio", "power")}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the position, then set the optimiser's rates for it under this run's schedule
        (load the optimiser state first: this overrides the rates it stored)."""
        super().load_state_dict(state_dict)
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
