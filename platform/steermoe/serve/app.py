"""The Ray Serve application: an HTTP ingress in front of the model replicas.

Two deployments. :class:`SteerMoEServer`, the ingress (FastAPI, ``serve.ingress_replicas``
replicas, no model), owns the OpenAI-compatible routes: authorization, request validation,
audio decoding, response shaping. It calls :class:`~steermoe.serve.decoder.SteerMoEDecoder`
(``deployment_name``, autoscaled between ``min_replicas`` and ``max_replicas``) through a
``DeploymentHandle``; each of those replicas holds the model and batches concurrent requests.

Routes: ``POST /v1/audio/transcriptions``, ``POST /v1/chat/completions``, ``GET /v1/models``,
``GET /v1/models/{id}``, ``GET /health`` (no key needed).

Every client mistake is a 4xx with an OpenAI error object; an unexpected fault is logged and
answered with a generic 500 (no traceback leaves the server). A model replica lost while it
held a request (process killed, out of memory, node gone) is no fault of the request: the
ingress retries it once on another replica (decoding has no side effects), else answers 503
``replica_unavailable`` with ``Retry-After``; Serve starts a replacement replica meanwhile. A
request no model replica takes within ``serve.replica_wait_s`` (every one lost and none back
yet, or every queue full) gets the same 503 instead of waiting on. A streamed request is
retried likewise until its first event; once its 200 is sent, a replica lost mid-stream ends
the stream with an ``error`` event and ``data: [DONE]``. (Losing an ingress replica itself
fails the requests it held with Serve's own 500.) Prometheus metrics:
Ray's own Serve metrics plus ``ray_steermoe_*`` on each node's Ray metrics port.
"""

# No `from __future__ import annotations` here: FastAPI resolves route annotations through
# Serve's ingress wrapper, whose globals are not this module's.
import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from ray import serve
from ray.exceptions import RayActorError
from ray.serve import Application
from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator
from starlette.exceptions import HTTPException as StarletteHTTPException

from steermoe.serve import requests as rq
from steermoe.serve import responses as rs
from steermoe.serve.args import ServeArgs, key_digest, with_key_digest
from steermoe.serve.decoder import ModelInfo, SteerMoEDecoder
from steermoe.serve.engine import Job, Result
from steermoe.serve.errors import APIError, error_body, server_error, unavailable
from steermoe.serve.loading import find_checkpoint, is_registry_ref, pin_version
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


# What a DeploymentHandle call raises when the replica that held it is gone (killed, its node
# lost) or none can take it: the call may be retried on another replica.
REPLICA_LOST = (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError)
# Retries of a call whose replica was lost (decoding has no side effects), then a 503.
RETRIES = 1
# `Retry-After` of that 503: the other replicas answer at once, a replacement starts meanwhile.
RETRY_AFTER_S = 2


def replica_lost(exc: BaseException) -> bool:
    """Whether ``exc`` (from a handle call) means the replica was lost, not that it failed."""
    return isinstance(exc, REPLICA_LOST) or isinstance(getattr(exc, "cause", None), REPLICA_LOST)


@serve.deployment
@serve.ingress(api)
class SteerMoEServer:
    """The HTTP ingress: authorizes, validates and decodes requests, calls the model replicas
    through ``decoder``, shapes the OpenAI answers. Holds no model.

    Args:
        args: :class:`ServeArgs` as a dict.
        decoder: handle of the :class:`SteerMoEDecoder` deployment.
    """

    def __init__(self, args: dict[str, Any], decoder: DeploymentHandle) -> None:
        self.args = ServeArgs.model_validate(args)
        self.decoder = decoder
        self.streams = decoder.options(stream=True)
        # The driver's key (digest) wins; else the replica's own environment; else no auth.
        self.key_sha256 = self.args.api_key_sha256 or key_digest(
            os.environ.get(self.args.api_key_env)
        )
        self.limit_bytes = int(self.args.max_body_mb * 2**20)
        self.created = int(time.time())
        self.stats = Stats()
        self._info: ModelInfo | None = None  # asked of a model replica on first use

    # ----------------------------------------------------------------- model calls

    async def _call(self, method: str, *args: Any) -> Any:
        """``decoder.<method>(*args)``; a call whose replica was lost is retried on another
        replica, ``RETRIES`` times, then answered 503 with ``Retry-After``."""
        for attempt in range(RETRIES + 1):
            response = getattr(self.decoder, method).remote(*args)
            try:
                await self._taken(response)
                return await response
            except Exception as exc:
                if not replica_lost(exc):
                    raise
                self._lost(method, exc, retried=attempt < RETRIES)
        raise unavailable(RETRY_AFTER_S)

    async def _open_stream(
        self, job: Job, pieces: bool
    ) -> tuple[str | Result | None, DeploymentResponseGenerator]:
        """Start a streamed decode and wait for its first item; retried like :meth:`_call`
        until then (no byte has reached the client yet). Returns ``(first, stream)``."""
        for attempt in range(RETRIES + 1):
            stream = self.streams.stream.remote(job, pieces)
            try:
                await self._taken(stream)
                return await stream.__anext__(), stream
            except Exception as exc:
                stream.cancel()
                if not replica_lost(exc):
                    raise
                self._lost("stream", exc, retried=attempt < RETRIES)
            except BaseException:  # the client left (cancelled)
                stream.cancel()
                raise
        raise unavailable(RETRY_AFTER_S)

    async def _taken(self, response: Any) -> None:
        """Wait until a model replica has taken ``response`` (a handle call), at most
        ``serve.replica_wait_s``; past that, cancel it and answer 503.

        Serve's router otherwise holds a call until some replica can take it, however long
        that is (a replacement that cannot be placed never comes). Calls over Serve's gRPC
        transport (its throughput-optimized mode) have no object reference to wait on and
        are not bounded.
        """
        if not getattr(response, "by_reference", False):
            return
        if isinstance(response, DeploymentResponseGenerator):
            assigned = response._to_object_ref_gen()
        else:
            assigned = response._to_object_ref()
        try:
            await asyncio.wait_for(assigned, self.args.replica_wait_s)
        except TimeoutError:
            response.cancel()
            logger.warning("no model replica took a request in %g s", self.args.replica_wait_s)
            self.stats.replica_lost("not_taken")
            raise unavailable(RETRY_AFTER_S, waited_s=self.args.replica_wait_s) from None

    def _lost(self, method: str, exc: BaseException, *, retried: bool) -> None:
        outcome = "retried" if retried else "unavailable"
        logger.warning("model replica lost during %s (%s): %s", method, outcome, type(exc).__name__)
        self.stats.replica_lost(outcome)

    async def _model(self) -> ModelInfo:
        if self._info is None:
            self._info = await self._call("describe")
        return self._info

    async def _decode(self, job: Job) -> Result:
        """Decode one request on a model replica (batched there with concurrent ones)."""
        result = await self._call("generate", job)
        if result is None:  # the replica logged why
            raise server_error()
        return result

    async def _stream(
        self,
        req: rq.ChatRequest,
        first: str | Result | None,
        stream: DeploymentResponseGenerator,
    ) -> AsyncIterator[str]:
        """SSE chunks of one streamed chat completion; ``first`` is the first item of the
        replica's ``stream`` (text pieces, then the :class:`Result` or ``None``).

        The 200 is sent by now: a replica lost mid-stream ends the stream with an ``error``
        event (``replica_unavailable``) and ``[DONE]``, as any other failure does.
        """
        rid, created, model = rs.new_id("chatcmpl"), int(time.time()), req.model
        offered = [t["function"]["name"] for t in req.tools]
        # With tools or json_object the answer is checked once complete, then sent whole.
        whole = bool(offered) or req.json_object
        item = first
        try:
            yield rs.chunk(rid, model, created, {"role": "assistant", "content": ""})
            while isinstance(item, str):
                yield rs.chunk(rid, model, created, {"content": item})
                item = await stream.__anext__()
            if item is None:  # the replica logged why
                raise server_error()
            result: Result = item
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
        except Exception as exc:
            if replica_lost(exc):
                logger.warning("model replica lost mid-stream: %s", type(exc).__name__)
                self.stats.replica_lost("stream_cut")
                err = unavailable(RETRY_AFTER_S)
            else:
                if not isinstance(exc, APIError):
                    logger.exception("streamed generation failed")
                err = server_error()
            yield rs.sse(err.body())
        finally:
            if isinstance(item, str):  # unfinished: a client that went away stops the decoding
                stream.cancel()
        yield rs.sse("[DONE]")

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
            response = JSONResponse(err.body(), status_code=err.status, headers=err.headers())
        except Exception:
            logger.exception("unexpected error on %s", route)
            err = server_error()
            response = JSONResponse(err.body(), status_code=err.status)
        self.stats.request(route, response.status_code, time.perf_counter() - start)
        return response

    @api.get("/health")
    async def health(self) -> JSONResponse:
        """Liveness, this ingress replica's request counters and a model replica's batch
        counters (no key needed); 503 while no model replica answers."""
        try:
            batches = await self._call("batches")
        except APIError as err:
            return JSONResponse(err.body(), status_code=err.status, headers=err.headers())
        summary = self.stats.summary()
        return JSONResponse(
            {"status": "ok", "model": self.args.served_name, **summary, "batches": batches}
        )

    @api.get("/v1/models")
    async def list_models(self, request: Request) -> Response:
        """The one served model, OpenAI ``list`` style."""

        async def handler() -> Response:
            return JSONResponse({"object": "list", "data": [await self._model_card()]})

        return await self._answer("models", request, handler)

    @api.get("/v1/models/{model_id:path}")
    async def get_model(self, model_id: str, request: Request) -> Response:
        """One model card, or 404 ``model_not_found``."""

        async def handler() -> Response:
            rq.check_model(model_id, self.args.served_name)
            return JSONResponse(await self._model_card())

        return await self._answer("models", request, handler)

    @api.post("/v1/audio/transcriptions")
    async def transcriptions(self, request: Request) -> Response:
        """OpenAI's Whisper API shape: multipart ``file`` + ``model``."""

        async def handler() -> Response:
            require_media_type(request, "multipart/form-data")
            body = await read_body(request, self.limit_bytes)
            fields = await parse_multipart(request, body)
            info = await self._model()
            req = rq.parse_transcription(fields, **self._limits(info), languages=info.languages)
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
            info = await self._model()
            req = rq.parse_chat(
                rq.parse_json(body), **self._limits(info), tool_prompt=info.tool_prompt
            )
            if req.stream:
                # Text pieces are sent as they form, unless the answer is checked whole.
                pieces = not (req.tools or req.json_object)
                first, stream = await self._open_stream(req.job, pieces)
                return StreamingResponse(
                    self._stream(req, first, stream), media_type="text/event-stream"
                )
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

    def _limits(self, info: ModelInfo) -> dict[str, Any]:
        return {
            "served_name": self.args.served_name,
            "max_tokens": self.args.max_tokens,
            "max_audio_s": info.max_audio_s,
            "default_instruction": info.default_instruction,
        }

    async def _model_card(self) -> dict[str, Any]:
        info = await self._model()
        return {
            "id": self.args.served_name,
            "object": "model",
            "created": self.created,
            "owned_by": "steermoe",
            "backbones": info.backbones,
            "max_audio_s": info.max_audio_s,
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
        The bound Serve application: the HTTP ingress (``<deployment_name>Ingress``,
        ``ingress_replicas`` replicas) in front of the model deployment (``deployment_name``,
        autoscaled between ``min_replicas`` and ``max_replicas``).
    """
    args = args if isinstance(args, ServeArgs) else ServeArgs.model_validate(args)
    args = with_key_digest(args)
    if is_registry_ref(args.model):
        uri = args.tracking_uri or default_tracking_uri()
        args = args.model_copy(update={"model": pin_version(args.model, uri), "tracking_uri": uri})
    else:
        folder = find_checkpoint(Path(args.model).expanduser().resolve())
        args = args.model_copy(update={"model": str(folder)})
    decoder = SteerMoEDecoder.options(
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
    ingress = SteerMoEServer.options(
        name=f"{args.deployment_name}Ingress",
        num_replicas=args.ingress_replicas,
        # Enough to keep every model replica's queue full (plus streams waiting for theirs).
        max_ongoing_requests=args.ongoing_limit * args.max_replicas + 16,
        # No reservation: it parses and relays; the model replicas hold the CPUs and GPUs.
        ray_actor_options={"num_cpus": 0},
    )
    return ingress.bind(args.model_dump(), decoder.bind(args.model_dump()))
