"""Frozen Whisper-family encoder run on the real clip length, with steering between layers.

Hugging Face's ``WhisperEncoder.forward`` insists on 3000 mel frames (30 s). This wrapper runs
the same frozen modules on the real length instead: the positional embedding is sliced to the
number of frames, padded frames are masked out of self-attention, and an optional
:class:`~steermoe.model.steering.SteeringMoE` is applied after each steered layer.

Shape legend: B batch, M mel bins, F mel frames, T = F / 2 encoder frames, D width.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from steermoe.model.steering import SteeringMoE

LayerHook = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


class WhisperEncoderWrapper(nn.Module):
    """Runs a frozen Hugging Face ``WhisperEncoder`` on clips shorter than 30 s.

    Args:
        encoder: a ``transformers`` ``WhisperEncoder`` (frozen by the caller).
        steer_layers: encoder layer indices that are steered, in order; the steering module's
            layer ``i`` is applied after encoder layer ``steer_layers[i]``.
    """

    def __init__(self, encoder: nn.Module, *, steer_layers: Sequence[int] = ()) -> None:
        super().__init__()
        self.encoder = encoder
        num_layers = len(encoder.layers)
        bad = [i for i in steer_layers if not 0 <= i < num_layers]
        if bad:
            raise ValueError(f"steering layers {bad} out of range for a {num_layers}-layer encoder")
        self.steer_index = {layer: i for i, layer in enumerate(steer_layers)}
        self.activation_checkpointing = False

    @property
    def dim(self) -> int:
        return self.encoder.config.d_model

    @property
    def num_layers(self) -> int:
        return len(self.encoder.layers)

    @property
    def max_frames(self) -> int:
        """Mel frames of the longest supported clip (3000 for 30 s Whisper)."""
        return self.encoder.config.max_source_positions * 2

    def forward(
        self,
        features: torch.Tensor,
        feature_lengths: torch.Tensor | None = None,
        steering: SteeringMoE | None = None,
        hook: LayerHook | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a batch of log-mel features.

        Args:
            features: (B, M, F) log-mel, F even and <= ``max_frames``; clips padded on the right.
            feature_lengths: (B,) valid mel frames per clip; None = all valid.
            steering: module applied after every steered layer (None = frozen encoder only).
            hook: optional ``hook(layer, h, mask) -> h`` called after every layer (probes).

        Returns:
            hidden (B, T, D) after the final layer norm, and mask (B, T) of valid frames.
        """
        enc = self.encoder
        b, _, f = features.shape
        if f % 2 or f > self.max_frames:
            raise ValueError(f"mel frames must be even and <= {self.max_frames}, got {f}")
        dtype = enc.conv1.weight.dtype
        x = F.gelu(enc.conv1(features.to(dtype)))  # B, M, F -> B, D, F
        x = F.gelu(enc.conv2(x))  # B, D, F -> B, D, T
        x = x.permute(0, 2, 1)  # B, D, T -> B, T, D
        t = x.shape[1]
        x = x + enc.embed_positions.weight[:t]  # positions sliced to the real length

        if feature_lengths is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=x.device)
        else:
            frames = (feature_lengths.to(x.device) + 1) // 2  # F -> T (conv2 stride 2)
            mask = torch.arange(t, device=x.device)[None, :] < frames[:, None]  # B, T
        # Additive key mask (B, 1, T, T); None when nothing is padded (exactly the stock path).
        attn = None
        if not bool(mask.all()):
            attn = torch.zeros(b, 1, t, t, dtype=x.dtype, device=x.device)
            attn = attn.masked_fill(~mask[:, None, None, :], torch.finfo(x.dtype).min)

        for index, layer in enumerate(enc.layers):
            if self.activation_checkpointing and torch.is_grad_enabled():
                x = checkpoint(layer, x, attn, use_reentrant=False)
            else:
                x = layer(x, attn)
            if steering is not None and index in self.steer_index:
                x = steering(self.steer_index[index], x, mask)
            if hook is not None:
                x = hook(index, x, mask)
        x = enc.layer_norm(x)
        return x, mask
