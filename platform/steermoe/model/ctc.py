"""Auxiliary CTC alignment of the projected audio tokens with the LLM's own word embeddings.

Shape legend: B batch, A audio tokens, H LLM width, V vocabulary of the loss (+1 blank).

Logits are ``scale * audio @ E[vocab].T`` against the LLM's frozen input-embedding rows of a
vocabulary, plus a learned blank vector. Minimising CTC on the target text pushes each audio
token toward the embedding of the word being spoken: the regime in which a frozen LLM copies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class CtcHead(nn.Module):
    """Learned blank and logit scale; the vocabulary is a (non-persistent) buffer of ids.

    Args:
        dim: LLM width H.
        scale_init: initial logit scale (kept positive through a log parametrisation).
        blank_std: standard deviation of the initial blank vector (the text-embedding RMS).
    """

    def __init__(self, *, dim: int, scale_init: float = 1.0, blank_std: float = 0.1) -> None:
        super().__init__()
        self.blank = nn.Parameter(torch.randn(dim) * blank_std)
        self.log_scale = nn.Parameter(
            torch.full((1,), math.log(scale_init))
        )  # 1-D: DeepSpeed broadcasts bytes
        # LLM token ids of the loss vocabulary (empty = every token) and, per LLM id, its
        # index among the CTC classes (0 = blank, -1 = outside the vocabulary).
        self.register_buffer("vocab", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("index", torch.zeros(0, dtype=torch.long), persistent=False)

    def set_vocabulary(self, token_ids: Sequence[int] | None, vocab_size: int) -> None:
        """Restrict the loss to ``token_ids`` (sorted, distinct); None = every token."""
        device = self.blank.device
        ids = (
            torch.arange(vocab_size, device=device)
            if token_ids is None
            else torch.tensor(sorted(set(int(i) for i in token_ids)), device=device)
        )
        if ids.numel() == 0:
            raise ValueError("CTC vocabulary is empty")
        index = torch.full((vocab_size,), -1, dtype=torch.long, device=device)
        index[ids] = torch.arange(1, ids.numel() + 1, device=device)
        self.vocab, self.index = ids, index

    def forward(
        self,
        audio: torch.Tensor,
        audio_mask: torch.Tensor,
        targets: Sequence[torch.Tensor | None],
        table: torch.Tensor,
    ) -> torch.Tensor:
        """Mean CTC loss (per target token) over the examples whose spoken words are known.

        Args:
            audio: projected audio tokens (B, A, H), fp32.
            audio_mask: valid audio tokens (B, A).
            targets: per example, LLM token ids of the words spoken, or None where they are
                unknown (an AQA answer is not what the clip says): that example adds no term.
                Ids outside the vocabulary are dropped.
            table: the LLM's input-embedding weight (V_llm, H), frozen.
        """
        if self.index.numel() == 0:
            self.set_vocabulary(None, table.shape[0])
        keep = [i for i, t in enumerate(targets) if t is not None and len(t) > 0]
        if not keep:  # a zero that still reaches every CTC parameter (DeepSpeed expects grads)
            return (audio.float().sum() + self.blank.sum() + self.log_scale.sum()) * 0.0
        if len(keep) < len(targets):
            rows_kept = torch.tensor(keep, device=audio.device)
            audio, audio_mask = audio[rows_kept], audio_mask[rows_kept]
            targets = [targets[i] for i in keep]
        # fp32 throughout (CTC has no bf16 kernel; DeepSpeed may hold this head in bf16).
        rows = torch.cat([self.blank[None].float(), table[self.vocab].float()])  # V+1, H
        logits = self.log_scale.float().exp() * audio.float() @ rows.T  # B, A, V+1
        log_probs = logits.log_softmax(-1).transpose(0, 1)  # B, A, V+1 -> A, B, V+1
        labels = []
        for t in targets:
            mapped = self.index[t.to(self.index.device)]
            labels.append(mapped[mapped > 0])
        target_lengths = torch.tensor([len(x) for x in labels], device=audio.device)
        return F.ctc_loss(
            log_probs,
            torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long),
            audio_mask.sum(1),
            target_lengths,
            blank=0,
            reduction="mean",
            zero_infinity=True,
        )
