"""The Ray Serve application: one FastAPI-ingress deployment behind OpenAI-compatible routes.

Routes: ``POST /v1/audio/transcriptions``, ``POST /v1/chat/completions``, ``GET /v1/models``,
``GET /v1/models/{id}``, ``GET /health`` (no key needed). Non-streamed requests of a replica are
decoded together by ``@serve.batch`` (one encoder pass and one batched decoding loop per batch).
A streamed chat request (``stream: true``) bypasses the batcher and decodes alone, token by
token; it shares the replica's model lock with the batches, so the two never run at once.

Every client mistake is a 4xx with an OpenAI error object; an unexpected fault is logged on
the replica and answered with a generic 500 (no traceback leaves the server). Prometheus
metrics: Ray's own Serve metrics plus ``ray_steermoe_*`` on each node's Ray metrics port.
"""

# No `from __future__ import annotations` here: FastAPI resolves route annotations through
# Serve's ingress wrapper, whose globals are not this module's.
import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from ray import serve
from ray.serve import Application
from starlette.exceptions import HTTPException as StarletteHTTPException

from steermoe.serve import requests as rq
from steermoe.serve import responses as rs
from steermoe.serve.args import ServeArgs, key_digest, with_key_digest
from steermoe.serve.engine import Engine, Job, Result
from steermoe.serve.errors import APIError, error_body, server_error
from steermoe.serve.loading import find_checkpoint, is_registry_ref, load_model, pin_version
from steermoe.serve.stats import Stats
from steermoe.serve.transport import (
    authorize,
    parse_multipart,
    read_body,
    require_media_type,
)
from steermoe.tracking import default_tracking_uri

logger = logging.getLogger("ray.serve")

api = FastAPI(title="SteerMoE", docs_url=None, redoc_url=None, openapi_url=None)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # Unknown routes (404) and wrong methods (405) as OpenAI answers them.
    where = f"{request.method} {request.url.path[:100]}"
    message = f"Invalid URL ({where})" if exc.status_code == 404 else f"{where}: {exc.detail}"
    return JSONResponse(error_body(message), status_code=exc.status_code)


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse(error_body("invalid request parameters"), status_code=400)


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
@serve.ingress(api)
class SteerMoEServer:
    """One replica: loads the model once, then answers the OpenAI-compatible routes.

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
        # The driver's key (digest) wins; else the replica's own environment; else no auth.
        self.key_sha256 = self.args.api_key_sha256 or key_digest(
            os.environ.get(self.args.api_key_env)
        )
        self.limit_bytes = int(self.args.max_body_mb * 2**20)
        self.created = int(time.time())
        self.backbones = {r: header["backbones"][r].get("name") for r in ("encoder", "llm")}
        # Transcription languages: those the checkpoint says it was trained on, else English.
        self.languages = tuple(header.get("languages") or rq.DEFAULT_LANGUAGES)
        self.stats = Stats()
        self._lock = asyncio.Lock()  # one model call at a time (batches and streams)
        self._pending: deque[_Pending] = deque()
        self._generate.set_max_batch_size(self.args.max_batch_size)
        self._generate.set_batch_wait_timeout_s(self.args.batch_wait_timeout_s)
        logger.info("SteerMoE replica ready: %s from %s", self.args.served_name, folder)

    # ----------------------------------------------------------------- model calls

    async def _decode(self, job: Job) -> Result:
        """Decode one request through the batcher; re-raise its own failure, if any."""
        out = await self._generate(job)
        if isinstance(out, Exception):
            raise out
        return out

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05, max_concurrent_batches=64)
    async def _generate(self, jobs: list[Job]) -> list[Result | Exception]:
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

    async def _run_group(self, jobs: list[Job]) -> list[Result | Exception]:
        """One model call for ``jobs``; if it fails, retry each alone so one bad request
        cannot fail the others (a request that fails alone gets a logged 500)."""
        self.stats.batch(len(jobs))
        try:
            return await asyncio.to_thread(self.engine.run, jobs)
        except Exception:
            logger.exception("decoding a batch of %d failed", len(jobs))
            if len(jobs) == 1:
                return [server_error()]
        out: list[Result | Exception] = []
        for job in jobs:
            try:
                out.extend(await asyncio.to_thread(self.engine.run, [job]))
            except Exception:
                logger.exception("decoding a request alone failed")
                out.append(server_error())
        return out

    async def _stream(self, req: rq.ChatRequest) -> AsyncIterator[str]:
        """SSE chunks for one streamed chat completion (decoded alone, outside the batcher)."""
        rid, created, model = rs.new_id("chatcmpl"), int(time.time()), req.model
        offered = [t["function"]["name"] for t in req.tools]
        # With tools or json_object the answer is checked once complete, then sent whole.
        whole = bool(offered) or req.json_object
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        cancel = threading.Event()

        def on_delta(piece: str) -> None:
            if not whole:
                loop.call_soon_threadsafe(queue.put_nowait, piece)

        async def work() -> Result:
            async with self._lock:
                self.stats.batch(1)
                return await asyncio.to_thread(self.engine.stream, req.job, on_delta, cancel)

        def done(t: asyncio.Task) -> None:
            queue.put_nowait(None)
            if not t.cancelled():
                t.exception()  # mark retrieved: a client that left raises Cancelled unseen

        task = asyncio.create_task(work())
        task.add_done_callback(done)
        try:
            yield rs.chunk(rid, model, created, {"role": "assistant", "content": ""})
            while (piece := await queue.get()) is not None:
                yield rs.chunk(rid, model, created, {"content": piece})
            try:
                result = task.result()
            except Exception:
                logger.exception("streamed generation failed")
                yield rs.sse(server_error().body())
                yield rs.sse("[DONE]")
                return
            finish = result.finish_reason
            if whole:
                message, finish = rs.message_from_result(
                    result,
                    offered,
                    json_object=req.json_object,
                    parallel_tool_calls=req.parallel_tool_calls,
                )
                delta = {k: message[k] for k in ("content", "refusal") if k in message}
                if message.get("tool_calls"):
                    delta = {
                        "tool_calls": [
                            {"index": i, **c} for i, c in enumerate(message["tool_calls"])
                        ]
                    }
                yield rs.chunk(rid, model, created, delta)
            yield rs.chunk(rid, model, created, {}, finish)
            if req.include_usage:
                yield rs.chunk(
                    rid, model, created, {}, with_usage=rs.usage(result), empty_choices=True
                )
            yield rs.sse("[DONE]")
        finally:
            cancel.set()  # a client that went away stops the decoding at its next token

    # ---------------------------------------------------------------------- routes

    async def _answer(
        self, route: str, request: Request, handler: Callable[[], Awaitable[Response]]
    ) -> Response:
        """Authorize, run ``handler``, turn errors into OpenAI error objects, record stats."""
        start = time.perf_counter()
        try:
            authorize(request, self.key_sha256)
            response = await handler()
        except APIError as err:
            headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
            response = JSONResponse(err.body(), status_code=err.status, headers=headers)
        except Exception:
            logger.exception("unexpected error on %s", route)
            err = server_error()
            response = JSONResponse(err.body(), status_code=err.status)
        self.stats.request(route, response.status_code, time.perf_counter() - start)
        return response

    @api.get("/health")
    async def health(self) -> JSONResponse:
        """Liveness plus this replica's request and batch counters (no key needed)."""
        return JSONResponse(
            {"status": "ok", "model": self.args.served_name, **self.stats.summary()}
        )

    @api.get("/v1/models")
    async def list_models(self, request: Request) -> Response:
        """The one served model, OpenAI ``list`` style."""

        async def handler() -> Response:
            return JSONResponse({"object": "list", "data": [self._model_card()]})

        return await self._answer("models", request, handler)

    @api.get("/v1/models/{model_id:path}")
    async def get_model(self, model_id: str, request: Request) -> Response:
        """One model card, or 404 ``model_not_found``."""

        async def handler() -> Response:
            rq.check_model(model_id, self.args.served_name)
            return JSONResponse(self._model_card())

        return await self._answer("models", request, handler)

    @api.post("/v1/audio/transcriptions")
    async def transcriptions(self, request: Request) -> Response:
        """OpenAI's Whisper API shape: multipart ``file`` + ``model``."""

        async def handler() -> Response:
            require_media_type(request, "multipart/form-data")
            body = await read_body(request, self.limit_bytes)
            fields = await parse_multipart(request, body)
            req = rq.parse_transcription(fields, **self._limits(), languages=self.languages)
            result = await self._decode(req.job)
            out = rs.transcription(
                result,
                response_format=req.response_format,
                duration_s=len(req.job.audio) / 16000,
                language=req.language,
            )
            return PlainTextResponse(out) if isinstance(out, str) else JSONResponse(out)

        return await self._answer("transcriptions", request, handler)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        """Chat completions with ``input_audio`` parts, tools and optional streaming."""

        async def handler() -> Response:
            require_media_type(request, "application/json")
            body = await read_body(request, self.limit_bytes)
            req = rq.parse_chat(
                rq.parse_json(body), **self._limits(), tool_prompt=self.engine.model.tool_prompt
            )
            if req.stream:
                return StreamingResponse(self._stream(req), media_type="text/event-stream")
            result = await self._decode(req.job)
            return JSONResponse(
                rs.chat_completion(
                    result,
                    model=req.model,
                    offered=[t["function"]["name"] for t in req.tools],
                    json_object=req.json_object,
                    parallel_tool_calls=req.parallel_tool_calls,
                )
            )

        return await self._answer("chat", request, handler)

    # --------------------------------------------------------------------- helpers

    def _limits(self) -> dict[str, Any]:
        return {
            "served_name": self.args.served_name,
            "max_tokens": self.args.max_tokens,
            "max_audio_s": self.engine.max_audio_s,
            "default_instruction": self.engine.default_instruction,
        }

    def _model_card(self) -> dict[str, Any]:
        return {
            "id": self.args.served_name,
            "object": "model",
            "created": self.created,
            "owned_by": "steermoe",
            "backbones": self.backbones,
            "max_audio_s": self.engine.max_audio_s,
            "max_tokens": self.args.max_tokens,
        }


def build_app(args: ServeArgs | dict[str, Any]) -> Application:
    """Typed application builder: ``serve.run(build_app({...}))`` or ``serve run``.

    Resolves what must be the same for every replica on the driver: a registry alias is
    pinned to its version, a checkpoint path made absolute (and checked), the API key in
    ``$<api_key_env>`` reduced to its SHA-256.

    Args:
        args: :class:`ServeArgs` or a dict of its fields.

    Returns:
        The bound Serve application (one deployment, autoscaled between min and max replicas).
    """
    args = args if isinstance(args, ServeArgs) else ServeArgs.model_validate(args)
    args = with_key_digest(args)
    if is_registry_ref(args.model):
        uri = args.tracking_uri or default_tracking_uri()
        args = args.model_copy(update={"model": pin_version(args.model, uri), "tracking_uri": uri})
    else:
        folder = find_checkpoint(Path(args.model).expanduser().resolve())
        args = args.model_copy(update={"model": str(folder)})
    deployment = SteerMoEServer.options(
        name=args.deployment_name,
        autoscaling_config={
            "min_replicas": args.min_replicas,
            "initial_replicas": max(1, args.min_replicas),
            "max_replicas": args.max_replicas,
            "target_ongoing_requests": args.target_ongoing_requests,
        },
        max_ongoing_requests=args.ongoing_limit,
        ray_actor_options={"num_cpus": args.cpus_per_replica, "num_gpus": args.gpus_per_replica},
    )
    return deployment.bind(args.model_dump())
