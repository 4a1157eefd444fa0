"""The model side of serving: batched and streamed decoding over ``model.generate``.

Serve calls the same ``collate`` + ``generate`` the evaluators measured. A batch decodes with
each request's own ``max_tokens`` and :class:`Decoding` (temperature, top_p, seed, stop);
greedy decoding, and sampling with a seed, are batch-invariant: a request gets the same tokens
alone or in any batch.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from steermoe.model.core import Decoding


@dataclass(frozen=True)
class Job:
    """One decoding request: a 16 kHz clip, the instruction, a token budget, how to decode."""

    audio: np.ndarray
    instruction: str
    max_tokens: int
    decoding: Decoding = field(default_factory=Decoding)


@dataclass(frozen=True)
class Result:
    """Decoded text, its token count, the prompt size and why decoding stopped."""

    text: str
    completion_tokens: int
    prompt_tokens: int
    finish_reason: str  # "stop" (end of turn or a stop string) or "length" (budget spent)


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
        """Decode ``jobs`` as one batch (one encoder pass, one batched decoding loop)."""
        batch = self.model.collate([j.audio for j in jobs], [j.instruction for j in jobs])
        gen = self.model.generate(
            batch,
            max_new_tokens=[j.max_tokens for j in jobs],
            decoding=[j.decoding for j in jobs],
        )
        return [
            Result(
                text=gen.texts[i],
                completion_tokens=len(gen.token_ids[i]),
                prompt_tokens=self._prompt_tokens(batch, i),
                finish_reason=gen.finish_reasons[i],
            )
            for i in range(len(jobs))
        ]

    def stream(
        self,
        job: Job,
        on_delta: Callable[[str], None],
        cancel: threading.Event | None = None,
    ) -> Result:
        """Decode one job alone, calling ``on_delta(text)`` with each new piece of text.

        Pieces are emitted only once they decode to complete characters (byte-level BPE can
        split a character across tokens) and cannot be the start of a stop string; their
        concatenation equals ``Result.text``.

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
            raw = self.model.tokenizer.decode(ids, skip_special_tokens=True)
            text = _before_stop(raw, job.decoding.stop).strip()
            if text.endswith("\ufffd") or not text.startswith(sent):
                return
            if len(text) > len(sent):
                on_delta(text[len(sent) :])
                sent = text

        gen = self.model.generate(
            batch, max_new_tokens=job.max_tokens, decoding=job.decoding, on_token=on_token
        )
        final = gen.texts[0]
        if final.startswith(sent) and len(final) > len(sent):
            on_delta(final[len(sent) :])
        return Result(
            text=final,
            completion_tokens=len(gen.token_ids[0]),
            prompt_tokens=self._prompt_tokens(batch, 0),
            finish_reason=gen.finish_reasons[0],
        )

    def _prompt_tokens(self, batch, i: int) -> int:
        """Prefix + audio + instruction positions the LLM saw for example ``i``."""
        stride = self.model.trainable.projector.stride
        frames = (int(batch.feature_lengths[i]) + 1) // 2  # F -> T (conv stride 2)
        audio = math.ceil(frames / stride)  # T -> A
        return len(self.model.template.prefix_ids) + audio + len(batch.prompt_ids[i])


def _before_stop(text: str, stop: Sequence[str]) -> str:
    """The part of a growing ``text`` sure to stay: before a stop string, or all but the last
    ``len(longest stop) - 1`` characters (they may begin one)."""
    if not stop:
        return text
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[: min(hits) if hits else max(0, len(text) - max(map(len, stop)) + 1)]
