"""Temporal pooling plus projection from the encoder width D to the LLM width H.

Shape legend: B batch, T encoder frames, D encoder width, S stride, H LLM width.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


class Projector(nn.Module):
    """Pool over time by ``stride`` (avg or max), then Linear(D -> H), a 2-layer MLP, or both.

    Args:
        in_dim: encoder width D.
        out_dim: LLM width H.
        stride: pooling stride S (4: 50 Hz -> 12.5 Hz).
        pool: ``avg`` or ``max``.
        kind: ``linear`` (paper), ``mlp`` (Linear -> GELU -> Linear, Ultravox-style) or
            ``linear_mlp``: the linear map plus an MLP branch whose output layer starts at
            zero, so it starts as exactly the ``linear`` projector (whose tensors it shares by
            name: a ``linear`` checkpoint warm-starts it) and adds capacity as it trains.
        hidden: MLP hidden width (default H).
        norm_gain: when given, an RMSNorm on the output whose learned gain starts at this
            value (the RMS of the LLM's text embeddings), so audio tokens enter the LLM at
            the scale of its own inputs; None = no norm.
    """

    def __init__(
        self,
        *,
        in_dim: int,
        out_dim: int,
        stride: int = 4,
        pool: Literal["avg", "max"] = "avg",
        kind: Literal["linear", "mlp", "linear_mlp"] = "linear",
        hidden: int | None = None,
        norm_gain: float | None = None,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.pool = pool
        self.kind = kind
        hidden = hidden or out_dim
        self.branch: nn.Module | None = None
        if kind == "mlp":
            self.net: nn.Module = _mlp(in_dim, hidden, out_dim)
        else:
            self.net = nn.Linear(in_dim, out_dim)
        if kind == "linear_mlp":
            self.branch = _mlp(in_dim, hidden, out_dim)
            nn.init.zeros_(self.branch[-1].weight)
            nn.init.zeros_(self.branch[-1].bias)
        self.norm: nn.Module | None = None
        if norm_gain is not None:
            self.norm = nn.RMSNorm(out_dim, eps=1e-6)
            nn.init.constant_(self.norm.weight, float(norm_gain))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, D), mask (B, T) -> (B, ceil(T/S), H), mask (B, ceil(T/S)).

        Padded frames never leak into a pooled frame: they are excluded from the average
        (or the max); a pooled frame is valid when it covers at least one valid frame.
        """
        b, t, d = x.shape
        s = self.stride
        pad = (-t) % s
        if pad:
            x = F.pad(x, (0, 0, 0, pad))  # B, T, D -> B, T', D (T' multiple of S)
            mask = F.pad(mask, (0, pad), value=False)
        x = x.reshape(b, -1, s, d)  # B, T', D -> B, T'/S, S, D
        m = mask.reshape(b, -1, s, 1).to(x.dtype)  # B, T'/S, S, 1
        if self.pool == "avg":
            pooled = (x * m).sum(2) / m.sum(2).clamp_min(1.0)  # B, T'/S, D
        else:
            pooled = x.masked_fill(m == 0, torch.finfo(x.dtype).min).amax(2)
            pooled = torch.where(m.sum(2) > 0, pooled, torch.zeros_like(pooled))
        new_mask = m.squeeze(-1).amax(2) > 0  # B, T'/S
        dtype = next(self.net.parameters()).dtype  # fp32 master weights beside bf16 backbones
        pooled = pooled.to(dtype)
        out = self.net(pooled)  # B, T/S, D -> B, T/S, H
        if self.branch is not None:
            out = out + self.branch(pooled)
        if self.norm is not None:
            out = self.norm(out)
        return out, new_mask


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
