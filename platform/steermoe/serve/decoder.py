"""The model deployment: each replica loads the model once and decodes what the ingress sends.

Called only through a ``DeploymentHandle`` (no HTTP). Non-streamed requests of a replica are
decoded together by ``@serve.batch`` (one encoder pass and one batched decoding loop per
batch). A streamed request bypasses the batcher and decodes alone, token by token; it shares
the replica's model lock with the batches, so the two never run at once.

Everything crossing the handle is a plain value: a :class:`~steermoe.serve.engine.Job` in; a
:class:`~steermoe.serve.engine.Result`, text pieces, or ``None`` (decoding failed; the reason is
logged on the replica) out.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ray import serve

from steermoe.serve import requests as rq
from steermoe.serve.args import ServeArgs
from steermoe.serve.engine import Engine, Job, Result
from steermoe.serve.loading import load_model
from steermoe.serve.stats import Stats

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class ModelInfo:
    """What the ingress needs to know about the loaded model to validate requests."""

    max_audio_s: float
    default_instruction: str
    tool_prompt: str
    languages: tuple[str, ...]
    backbones: dict[str, str | None]


@dataclass
class _Pending:
    """A batch formed by ``@serve.batch`` that waits for the model."""

    jobs: list[Job]
    future: asyncio.Future
    # Jobs handed to the model so far, and their results (filled in order).
    taken: int = 0
    results: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.results = [None] * len(self.jobs)


@serve.deployment
class SteerMoEDecoder:
    """One model replica.

    Args:
        args: :class:`ServeArgs` as a dict (what travels to every replica).
    """

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = ServeArgs.model_validate(args)
        model, header, folder = load_model(
            self.args.model,
            tracking_uri=self.args.tracking_uri,
            device=self.args.device,
            cache_dir=self.args.cache_dir,
        )
        self.engine = Engine(
            model,
            max_audio_s=self.args.max_audio_s,
            default_instruction=header["model_config"]["default_instruction"],
        )
        self.info = ModelInfo(
            max_audio_s=self.engine.max_audio_s,
            default_instruction=self.engine.default_instruction,
            tool_prompt=model.tool_prompt,
            # Transcription languages: those the checkpoint was trained on, else English.
            languages=tuple(header.get("languages") or rq.DEFAULT_LANGUAGES),
            backbones={r: header["backbones"][r].get("name") for r in ("encoder", "llm")},
        )
        self.stats = Stats()
        self._lock = asyncio.Lock()  # one model call at a time (batches and streams)
        self._pending: deque[_Pending] = deque()
        self._generate.set_max_batch_size(self.args.max_batch_size)
        self._generate.set_batch_wait_timeout_s(self.args.batch_wait_timeout_s)
        logger.info("SteerMoE replica ready: %s from %s", self.args.served_name, folder)

    def describe(self) -> ModelInfo:
        """The loaded model's limits and identity."""
        return self.info

    def batches(self) -> dict[str, Any]:
        """This replica's batch counters (``count``, ``max_size``, ``recent_sizes``)."""
        return self.stats.summary()["batches"]

    async def generate(self, job: Job) -> Result | None:
        """Decode one request through the batcher (``None``: it failed, see the log)."""
        return await self._generate(job)

    async def stream(self, job: Job, pieces: bool = True) -> AsyncIterator[str | Result | None]:
        """Decode one request alone: its text pieces as they form (if ``pieces``), then the
        :class:`Result` (``None`` if decoding failed). Cancelling the call stops the decoding
        at its next token."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        cancel = threading.Event()

        def on_delta(piece: str) -> None:
            if pieces:
                loop.call_soon_threadsafe(queue.put_nowait, piece)

        async def work() -> Result:
            async with self._lock:
                self.stats.batch(1)
                return await asyncio.to_thread(self.engine.stream, job, on_delta, cancel)

        def done(t: asyncio.Task) -> None:
            queue.put_nowait(None)
            if not t.cancelled():
                t.exception()  # mark retrieved: a caller that left raises Cancelled unseen

        task = asyncio.create_task(work())
        task.add_done_callback(done)
        try:
            while (piece := await queue.get()) is not None:
                yield piece
            try:
                result = task.result()
            except Exception:
                logger.exception("streamed generation failed")
                result = None
            yield result
        finally:
            cancel.set()  # a caller that went away stops the decoding at its next token

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05, max_concurrent_batches=64)
    async def _generate(self, jobs: list[Job]) -> list[Result | None]:
        """Decode concurrent requests together (sizes set from the args in ``__init__``).

        Ray forms the next batch while the model is still busy with the previous one (after
        ``batch_wait_timeout_s``), which leaves small batches queued behind the model. Formed
        batches therefore wait for the model lock, and whichever gets it decodes the oldest
        queued requests of all waiting batches, up to ``max_batch_size`` (its own included:
        the lock is FIFO, so everything queued before it has already been decoded).
        """
        entry = _Pending(jobs, asyncio.get_running_loop().create_future())
        self._pending.append(entry)
        async with self._lock:  # FIFO: every earlier entry is already done
            if not entry.future.done():
                group = self._take_pending()
                results = await self._run_group([j for e, a, b in group for j in e.jobs[a:b]])
                for e, a, b in group:
                    e.results[a:b], results = results[: b - a], results[b - a :]
                    if b == len(e.jobs) and not e.future.done():
                        e.future.set_result(e.results)
        return entry.future.result()

    def _take_pending(self) -> list[tuple[_Pending, int, int]]:
        """Up to ``max_batch_size`` of the oldest queued requests, as ``(entry, start, end)``
        slices; an entry that does not fit whole is split and finished by a later call."""
        group, room = [], self.args.max_batch_size
        while self._pending and room:
            head = self._pending[0]
            if head.future.done():  # cancelled
                self._pending.popleft()
                continue
            start = head.taken
            head.taken = min(len(head.jobs), start + room)
            group.append((head, start, head.taken))
            room -= head.taken - start
            if head.taken == len(head.jobs):
                self._pending.popleft()
        return group

    async def _run_group(self, jobs: list[Job]) -> list[Result | None]:
        """One model call for ``jobs``; if it fails, retry each alone so one bad request
        cannot fail the others (a request that fails alone gets ``None``, logged)."""
        self.stats.batch(len(jobs))
        try:
            return await asyncio.to_thread(self.engine.run, jobs)
        except Exception:
            logger.exception("decoding a batch of %d failed", len(jobs))
            if len(jobs) == 1:
                return [None]
        out: list[Result | None] = []
        for job in jobs:
            try:
                out.extend(await asyncio.to_thread(self.engine.run, [job]))
            except Exception:
                logger.exception("decoding a request alone failed")
                out.append(None)
        return out
