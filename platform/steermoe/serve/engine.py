"""The model side of serving: batched and streamed greedy decoding over ``model.generate``.

Serve calls the same ``collate`` + ``generate`` the evaluators measured. A batch decodes with
each request's own ``max_tokens`` as its budget (per-example budgets in ``generate``); greedy
decoding is batch-invariant, so a request gets the same tokens alone or in any batch.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Job:
    """One decoding request: a 16 kHz clip, the instruction and a token budget."""

    audio: np.ndarray
    instruction: str
    max_tokens: int


@dataclass(frozen=True)
class Result:
    """Decoded text, its token count, the prompt size and why decoding stopped."""

    text: str
    completion_tokens: int
    prompt_tokens: int
    finish_reason: str  # "stop" (end of turn) or "length" (budget exhausted)


class Cancelled(Exception):
    """Raised inside ``generate`` when a streaming client went away."""


class Engine:
    """Wraps a loaded ``SteerMoEModel`` for serving (no Ray, no HTTP: unit-testable).

    Args:
        model: the loaded model, in eval mode.
        max_audio_s: service limit on clip length; the effective limit is also capped by the
            encoder window (30 s for Whisper, 3 s for the tiny test encoder).
        default_instruction: instruction for requests without one (the checkpoint's ASR
            instruction, as the evaluators use it).
    """

    def __init__(
        self, model, *, max_audio_s: float, default_instruction: str = "Transcribe the audio."
    ) -> None:
        self.model = model
        self.default_instruction = default_instruction
        hop = model.feature_extractor.hop_length
        window_s = model.encoder.max_frames * hop / 16000
        self.max_audio_s = min(max_audio_s, window_s)

    def run(self, jobs: Sequence[Job]) -> list[Result]:
        """Decode ``jobs`` as one batch (one encoder pass, one batched greedy loop)."""
        batch = self.model.collate([j.audio for j in jobs], [j.instruction for j in jobs])
        gen = self.model.generate(batch, max_new_tokens=[j.max_tokens for j in jobs])
        out = []
        for i, job in enumerate(jobs):
            ids = gen.token_ids[i][: job.max_tokens]
            out.append(
                Result(
                    text=self._decode(ids),
                    completion_tokens=len(ids),
                    prompt_tokens=self._prompt_tokens(batch, i),
                    finish_reason="length" if len(ids) >= job.max_tokens else "stop",
                )
            )
        return out

    def stream(
        self,
        job: Job,
        on_delta: Callable[[str], None],
        cancel: threading.Event | None = None,
    ) -> Result:
        """Decode one job alone, calling ``on_delta(text)`` with each new piece of text.

        Pieces are emitted only once they decode to complete characters (byte-level BPE can
        split a character across tokens); their concatenation equals ``Result.text``.

        Raises:
            Cancelled: ``cancel`` was set (the client disconnected).
        """
        batch = self.model.collate([job.audio], [job.instruction])
        ids: list[int] = []
        sent = ""

        def on_token(step: int, new: list[int | None]) -> None:
            nonlocal sent
            if cancel is not None and cancel.is_set():
                raise Cancelled
            if new[0] is None:
                return
            ids.append(new[0])
            text = self._decode(ids)
            if text.endswith("\ufffd") or not text.startswith(sent):
                return
            if len(text) > len(sent):
                on_delta(text[len(sent) :])
                sent = text

        gen = self.model.generate(batch, max_new_tokens=job.max_tokens, on_token=on_token)
        ids = gen.token_ids[0]
        final = self._decode(ids)
        if final.startswith(sent) and len(final) > len(sent):
            on_delta(final[len(sent) :])
        return Result(
            text=final,
            completion_tokens=len(ids),
            prompt_tokens=self._prompt_tokens(batch, 0),
            finish_reason="length" if len(ids) >= job.max_tokens else "stop",
        )

    def _decode(self, ids: Sequence[int]) -> str:
        # The same decoding as SteerMoEModel.generate, so texts match the evaluated ones.
        return self.model.tokenizer.decode(list(ids), skip_special_tokens=True).strip()

    def _prompt_tokens(self, batch, i: int) -> int:
        """Prefix + audio + instruction positions the LLM saw for example ``i``."""
        stride = self.model.trainable.projector.stride
        frames = (int(batch.feature_lengths[i]) + 1) // 2  # F -> T (conv stride 2)
        audio = math.ceil(frames / stride)  # T -> A
        return len(self.model.template.prefix_ids) + audio + len(batch.prompt_ids[i])
