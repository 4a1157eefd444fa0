"""The paper's three AdamW parameter groups, warmup + decay, nothing frozen included."""

from __future__ import annotations

import math

import torch

from steermoe.config import OptimConfig


def param_groups(model, optim: OptimConfig) -> list[dict]:
    """Steering vectors + scales, router, projector and CTC head, each with its own learning
    rate.

    Only trainable parameters are included; empty groups (e.g. no steering) are left out.
    """
    groups: dict[str, list[torch.nn.Parameter]] = {
        "steering": [],
        "router": [],
        "projector": [],
        "ctc": [],
    }
    for name, param in model.trainable_parameters():
        if name.startswith("steering.router."):
            groups["router"].append(param)
        elif name.startswith("steering."):
            groups["steering"].append(param)
        elif name.startswith("projector."):
            groups["projector"].append(param)
        elif name.startswith("ctc."):
            groups["ctc"].append(param)
        else:
            raise ValueError(f"trainable parameter {name!r} belongs to no optimizer group")
    lrs = {
        "steering": optim.lr_steering,
        "router": optim.lr_router,
        "projector": optim.lr_projector,
        "ctc": optim.lr_ctc,
    }
    return [
        {"name": key, "params": params, "lr": lrs[key], "weight_decay": optim.weight_decay}
        for key, params in groups.items()
        if params
    ]


def build_optimizer(model, optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`."""
    return torch.optim.AdamW(param_groups(model, optim), betas=tuple(optim.betas))


def lr_lambda(optim: OptimConfig, max_steps: int):
    """Multiplier of each group's base lr at a step: linear warmup, then cosine/linear/constant."""

    def factor(step: int) -> float:
        if optim.warmup_steps and step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        if optim.schedule == "constant":
            return 1.0
        span = max(1, max_steps - optim.warmup_steps)
        progress = min(1.0, (step - optim.warmup_steps) / span)
        if optim.schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_scheduler(optimizer, optim: OptimConfig, max_steps: int):
    """LambdaLR with :func:`lr_lambda`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(optim, max_steps))
