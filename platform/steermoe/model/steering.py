"""The steering mixture of experts that lives inside the frozen encoder (README: SteerMoE Platform).

Shape legend: B batch, T encoder frames, D encoder width, L steered layers, N experts,
K experts kept by top-k routing.

For steered layer ``l`` with frozen output ``h`` (B, T, D)::

    logits = h @ W_l.T + b_l                     # W_l: (N, D), a slice of one Linear(D -> L*N)
    gate   = softmax(logits)                     # dense (paper), or top-k: softmax over the
                                                 # K largest logits, zeros elsewhere
    x      = h + a_l * gate @ E_l                # E_l: (N, D), a_l: scalar
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


class Router(nn.Module):
    """One ``Linear(D -> L*N)`` with bias whose weight is sliced per layer.

    Only layer ``l``'s N rows are used at layer ``l``: the L*N logits are never all computed.
    """

    def __init__(self, *, dim: int, num_layers: int, num_experts: int) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.num_experts = num_experts
        self.proj = nn.Linear(dim, num_layers * num_experts)
        nn.init.normal_(self.proj.weight, std=dim**-0.5)
        nn.init.zeros_(self.proj.bias)

    def forward(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """Router logits of one layer: (B, T, D) -> (B, T, N)."""
        rows = slice(layer * self.num_experts, (layer + 1) * self.num_experts)
        # Routing runs in the router's own dtype (fp32 master weights beside bf16 backbones).
        w = self.proj.weight
        return F.linear(h.to(w.dtype), w[rows], self.proj.bias[rows])


class SteeringExperts(nn.Module):
    """Steering vectors E (L, N, D) ~ N(0, init_std^2) and layer scales a (L,) = init_scale."""

    def __init__(
        self, *, num_layers: int, num_experts: int, dim: int, init_std: float, init_scale: float
    ) -> None:
        super().__init__()
        self.vectors = nn.Parameter(torch.randn(num_layers, num_experts, dim) * init_std)
        self.scales = nn.Parameter(torch.full((num_layers,), float(init_scale)))

    def forward(self, layer: int, gate: torch.Tensor) -> torch.Tensor:
        """Steering offset of one layer: gate (B, T, N) -> a_l * gate @ E_l (B, T, D)."""
        vectors = self.vectors[layer]  # N, D
        gate = gate.to(vectors.dtype)
        return self.scales[layer] * (gate @ vectors)  # B, T, N @ N, D -> B, T, D


def route(logits: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """Gate weights from router logits (B, T, N) -> (B, T, N).

    ``top_k=None`` (or K = N) is the paper's dense softmax. Otherwise the K largest logits
    are kept, softmaxed among themselves, and every other expert gets exactly zero.
    """
    if top_k is None or top_k >= logits.shape[-1]:
        return torch.softmax(logits.float(), dim=-1).to(logits.dtype)
    kept, index = logits.topk(top_k, dim=-1)  # B, T, K
    weights = torch.softmax(kept.float(), dim=-1).to(logits.dtype)
    return torch.zeros_like(logits).scatter(-1, index, weights)


@dataclass
class RoutingStats:
    """Per-forward routing statistics, one entry per steered layer (cleared each forward)."""

    # Mean gate weight of each expert over valid frames: list of (N,) tensors, one per layer.
    usage: list[torch.Tensor] = field(default_factory=list)
    # Fraction of valid frames that picked each expert as their top-1: list of (N,) tensors.
    top1: list[torch.Tensor] = field(default_factory=list)
    load_balance: list[torch.Tensor] = field(default_factory=list)
    z_loss: list[torch.Tensor] = field(default_factory=list)

    def clear(self) -> None:
        self.usage.clear()
        self.top1.clear()
        self.load_balance.clear()
        self.z_loss.clear()


class SteeringMoE(nn.Module):
    """Router + experts with top-k or dense routing and optional auxiliary losses.

    Args:
        router: per-layer sliced router.
        experts: steering vectors and layer scales.
        top_k: experts kept per frame (None = dense).
        load_balance_weight: weight of the Switch-style load-balancing loss.
        z_loss_weight: weight of the router z-loss (mean squared logsumexp of the logits).
    """

    def __init__(
        self,
        *,
        router: Router,
        experts: SteeringExperts,
        top_k: int | None = None,
        load_balance_weight: float = 0.0,
        z_loss_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.router = router
        self.experts = experts
        self.top_k = top_k
        self.load_balance_weight = load_balance_weight
        self.z_loss_weight = z_loss_weight
        self.stats = RoutingStats()

    @property
    def num_layers(self) -> int:
        return self.router.num_layers

    @property
    def num_experts(self) -> int:
        return self.router.num_experts

    def forward(
        self, layer: int, h: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Steer one layer's output.

        Args:
            layer: index among the steered layers (0..L-1).
            h: frozen layer output (B, T, D).
            mask: valid frames (B, T) bool; padded frames do not count in statistics/losses.

        Returns:
            (B, T, D): ``h + a_l * gate(h) @ E_l``.
        """
        logits = self.router(layer, h)  # B, T, D -> B, T, N
        gate = route(logits, self.top_k)  # B, T, N
        self._record(logits, gate, mask)
        return h + self.experts(layer, gate).to(h.dtype)  # B, T, D

    def _record(self, logits: torch.Tensor, gate: torch.Tensor, mask: torch.Tensor | None) -> None:
        n = logits.shape[-1]
        flat_logits = logits.reshape(-1, n).float()  # B*T, N
        flat_gate = gate.reshape(-1, n).float()
        if mask is not None:
            keep = mask.reshape(-1)
            flat_logits, flat_gate = flat_logits[keep], flat_gate[keep]
        if flat_gate.shape[0] == 0:
            return
        probs = torch.softmax(flat_logits, dim=-1)
        top1 = F.one_hot(flat_logits.argmax(-1), n).float().mean(0)  # N
        # Switch Transformer: N * sum_i f_i * P_i, with f the top-1 dispatch fraction.
        self.stats.load_balance.append(n * (top1.detach() * probs.mean(0)).sum())
        self.stats.z_loss.append(torch.logsumexp(flat_logits, dim=-1).pow(2).mean())
        self.stats.usage.append(flat_gate.mean(0).detach())
        self.stats.top1.append(top1.detach())

    def aux_loss(self) -> torch.Tensor | None:
        """Weighted auxiliary losses of the last forward (None when both weights are 0)."""
        if not (self.load_balance_weight or self.z_loss_weight) or not self.stats.z_loss:
            return None
        loss = torch.zeros((), device=self.stats.z_loss[0].device)
        if self.load_balance_weight:
            loss = loss + self.load_balance_weight * torch.stack(self.stats.load_balance).mean()
        if self.z_loss_weight:
            loss = loss + self.z_loss_weight * torch.stack(self.stats.z_loss).mean()
        return loss

    def routing_summary(self) -> dict[str, float]:
        """Flat metrics of the last forward: expert usage per layer and the aux losses."""
        out: dict[str, float] = {}
        for layer, usage in enumerate(self.stats.usage):
            for expert, value in enumerate(usage.tolist()):
                out[f"usage/l{layer}/e{expert}"] = value
        if self.stats.load_balance:
            out["load_balance_loss"] = float(torch.stack(self.stats.load_balance).mean().detach())
            out["router_z_loss"] = float(torch.stack(self.stats.z_loss).mean().detach())
        return out
