"""Losing a model replica: every request still gets a 200 or a clean 503.

The ingress's handling of a lost replica is checked first without Ray, against fake handles
(retry once, then 503 with ``Retry-After``; a stream cut mid-way ends with an error event and
``[DONE]``). Then for real: two model replicas behind the HTTP ingress, on a local Ray cluster
on 127.0.0.1 (tiny random backbones). Client threads send transcriptions and streamed chats
without pause while one model replica's process is SIGKILLed as it decodes. Every answer must
be a 200 or a 503 with ``Retry-After`` (no other status, no timeout: a hang is a failure),
every stream must end with ``data: [DONE]``, requests must succeed after the kill, and Serve
must bring the deployment back to two RUNNING replicas, one of them a new process.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests

from steermoe.env import free_port

CLIP = Path(
    "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav"
)
APP, DEPLOYMENT = "steermoe-resilience", "SteerMoE"
CLIENTS = 4
REQUEST_TIMEOUT_S = 20  # per request (and per read of a stream): longer is a hang
LOAD_AFTER_KILL_S = 3.0
RECOVERY_LIMIT_S = 150  # a replacement replica imports torch and loads the model first
# serve.replica_wait_s in these tests: a request no replica takes in this time gets a 503.
WAIT_S = 0.3
LIVE_WAIT_S = 3.0


@dataclass(frozen=True)
class Outcome:
    kind: str  # "asr" or "stream"
    sent: float  # time.monotonic()
    status: int | str  # HTTP status, or the client-side exception
    retry_after: str | None = None
    stream_error: str | None = None  # code of a stream's error event
    complete: bool = True  # a stream ended with `data: [DONE]`


def replica_pids() -> set[int]:
    """PIDs of the model replicas' processes (Ray titles them ``ray::ServeReplica:<app>:<dep>``
    plus ``.<method>`` while busy)."""
    out = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        title = (proc.info["cmdline"] or [""])[0].split(" ")[0]
        if title.split(".")[0] == f"ray::ServeReplica:{APP}:{DEPLOYMENT}":
            out.add(proc.info["pid"])
    return out


def busiest(pids: set[int], *, window_s: float = 0.2) -> tuple[int, float]:
    """The replica process that used the most CPU over ``window_s`` (it is decoding), and
    that CPU time."""
    procs = [psutil.Process(pid) for pid in pids]
    before = [sum(p.cpu_times()[:2]) for p in procs]
    time.sleep(window_s)
    used = [sum(p.cpu_times()[:2]) - b for p, b in zip(procs, before)]
    best = max(range(len(procs)), key=used.__getitem__)
    return procs[best].pid, used[best]


def running_replicas() -> int:
    from ray import serve

    app = serve.status().applications.get(APP)
    states = app.deployments[DEPLOYMENT].replica_states if app else {}
    return states.get("RUNNING", 0) if set(states) <= {"RUNNING"} else -1


def send(url: str, kind: str, clip: bytes) -> Outcome:
    sent = time.monotonic()
    try:
        if kind == "asr":
            r = requests.post(
                f"{url}/v1/audio/transcriptions",
                files={"file": ("a.wav", clip)},
                data={"model": "steermoe"},
                timeout=REQUEST_TIMEOUT_S,
            )
            return Outcome(kind, sent, r.status_code, r.headers.get("retry-after"))
        body = {
            "model": "steermoe",
            "max_tokens": 8,
            "stream": True,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "input_audio",
                            "input_audio": {
                                "data": base64.b64encode(clip).decode(),
                                "format": "wav",
                            },
                        }
                    ],
                }
            ],
        }
        with requests.post(
            f"{url}/v1/chat/completions", json=body, stream=True, timeout=REQUEST_TIMEOUT_S
        ) as r:
            events = [line[6:] for line in r.iter_lines() if line.startswith(b"data: ")]
        errors = [json.loads(e)["error"]["code"] for e in events if e.startswith(b'{"error"')]
        return Outcome(
            kind,
            sent,
            r.status_code,
            r.headers.get("retry-after"),
            stream_error=errors[0] if errors else None,
            complete=r.status_code != 200 or events[-1:] == [b"[DONE]"],
        )
    except requests.RequestException as exc:
        return Outcome(kind, sent, type(exc).__name__)


# ------------------------------------------------------------- the ingress, without Ray


class _Handle:
    """A fake ``DeploymentHandle``: ``generate`` and ``stream`` answer from scripted outcomes
    (a value, or an exception to raise), one per call."""

    def __init__(self, *outcomes) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0
        self.generate = self.stream = self

    def remote(self, *args):
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, _Stream | _Unassigned):
            return outcome

        async def answer():
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

        return answer()


class _Stream:
    """A fake streaming response: yields ``items``; an exception among them is raised."""

    def __init__(self, *items) -> None:
        self.items = list(items)
        self.cancelled = False

    async def __anext__(self):
        item = self.items.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    def cancel(self) -> None:
        self.cancelled = True


def _ingress(handle: _Handle):
    """The ingress's model-call methods on a plain object (no Serve replica around them)."""
    from steermoe.serve.app import SteerMoEServer

    server = SteerMoEServer.func_or_class
    lost: list[str] = []

    class Ingress:
        _call, _open_stream, _stream, _lost, _taken = (
            server._call,
            server._open_stream,
            server._stream,
            server._lost,
            server._taken,
        )

        def __init__(self) -> None:
            self.decoder = self.streams = handle
            self.stats = type("Stats", (), {"replica_lost": staticmethod(lost.append)})()
            self.args = type("Args", (), {"replica_wait_s": WAIT_S})()

    return Ingress(), lost


class _Unassigned:
    """A fake handle call that no replica ever takes (Serve's router holds it)."""

    by_reference = True

    def __init__(self) -> None:
        self.cancelled = False

    async def _to_object_ref(self):
        await asyncio.sleep(3600)

    def cancel(self) -> None:
        self.cancelled = True

    def __await__(self):
        raise AssertionError("awaited a call no replica took")


def _result(text: str = "hello"):
    from steermoe.serve.engine import Result

    return Result(text=text, completion_tokens=2, prompt_tokens=9, finish_reason="stop")


def test_a_call_whose_replica_is_lost_is_retried_once_then_503():
    from ray.exceptions import ActorDiedError, ActorUnavailableError
    from ray.serve.exceptions import ReplicaUnavailableError

    from steermoe.serve.errors import APIError

    ingress, lost = _ingress(_Handle(ActorDiedError(), _result()))
    assert asyncio.run(ingress._call("generate", None)) == _result()
    assert lost == ["retried"]

    ingress, lost = _ingress(
        _Handle(ActorUnavailableError("gone", None), ReplicaUnavailableError("r1"))
    )
    with pytest.raises(APIError) as info:
        asyncio.run(ingress._call("generate", None))
    err = info.value
    assert (err.status, err.code, err.type) == (503, "replica_unavailable", "server_error")
    assert err.headers() == {"Retry-After": "2"} and lost == ["retried", "unavailable"]

    handle = _Handle(ValueError("a bug, not a lost replica"))
    ingress, lost = _ingress(handle)
    with pytest.raises(ValueError):
        asyncio.run(ingress._call("generate", None))
    assert handle.calls == 1 and lost == []


def test_a_call_no_replica_takes_is_cancelled_and_answered_503_after_the_wait():
    from steermoe.serve.errors import APIError

    waiting = _Unassigned()
    ingress, lost = _ingress(_Handle(waiting))
    tic = time.monotonic()
    with pytest.raises(APIError) as info:
        asyncio.run(ingress._call("generate", None))
    waited = time.monotonic() - tic
    err = info.value
    assert (err.status, err.code) == (503, "replica_unavailable")
    assert f"within {WAIT_S:g} s" in err.message and err.headers() == {"Retry-After": "2"}
    assert waiting.cancelled and lost == ["not_taken"]
    assert WAIT_S <= waited < WAIT_S + 1.0, waited


def test_a_stream_is_retried_until_its_first_item_then_cut_with_an_error_event():
    from ray.exceptions import ActorDiedError

    from steermoe.serve import requests as rq
    from steermoe.serve.engine import Job

    lost_early = _Stream(ActorDiedError())
    cut = _Stream("lo", "ng", ActorDiedError())
    ingress, lost = _ingress(_Handle(lost_early, cut))
    req = rq.ChatRequest(model="steermoe", job=Job(audio=None, instruction="", max_tokens=4))

    async def run() -> list[str]:
        first, stream = await ingress._open_stream(req.job, True)
        assert (first, stream) == ("lo", cut)
        return [e async for e in ingress._stream(req, first, stream)]

    events = [json.loads(e[6:]) if e != "data: [DONE]\n\n" else e for e in asyncio.run(run())]
    assert lost_early.cancelled and lost == ["retried", "stream_cut"]
    deltas = [e["choices"][0]["delta"] for e in events[:3]]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "lo"}, {"content": "ng"}]
    assert events[3]["error"]["code"] == "replica_unavailable"
    assert events[4:] == ["data: [DONE]\n\n"]


# ------------------------------------------------------------------ a real replica loss


@pytest.mark.ray
@pytest.mark.slow
def test_losing_a_model_replica_under_load(tmp_path):
    if not CLIP.is_file():
        pytest.skip("Debian package pocketsphinx-testdata (real LibriVox clips) is not installed")
    import ray
    from ray import serve

    from steermoe.config import ModelConfig
    from steermoe.model import build_model, save_checkpoint
    from steermoe.serve import ServeArgs, build_app

    clip = CLIP.read_bytes()
    start = time.monotonic()
    config = ModelConfig(encoder="tiny-random-whisper", llm="tiny-random-llm")
    ckpt = save_checkpoint(
        build_model(config, cache_dir=tmp_path / "cache"), config, tmp_path / "ck" / "best"
    )
    args = ServeArgs(
        model=str(ckpt),
        cache_dir=str(tmp_path / "cache"),
        min_replicas=2,
        max_replicas=2,
        cpus_per_replica=0.5,
        max_tokens=8,
        batch_wait_timeout_s=0.02,
        replica_wait_s=LIVE_WAIT_S,
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # address="local": a new cluster of our own, never one another process started.
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    outcomes: list[Outcome] = []
    stop = threading.Event()

    def client(i: int) -> None:
        kinds = ("asr", "stream") if i % 2 == 0 else ("stream", "asr")
        while not stop.is_set():
            for kind in kinds:
                outcomes.append(send(url, kind, clip))

    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(args), name=APP, route_prefix="/")
        deployed = time.monotonic()
        before = replica_pids()
        assert len(before) == 2 and running_replicas() == 2, before

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        while sum(o.status == 200 for o in outcomes) < 2 * CLIENTS:  # both replicas busy
            assert time.monotonic() - deployed < 60, Counter(o.status for o in outcomes)
            time.sleep(0.1)
        # Kill a replica while it decodes, so requests are in flight on it.
        victim, busy = busiest(before)
        while busy < 0.02 and time.monotonic() - deployed < 60:
            victim, busy = busiest(before)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        # Keep the load on while the deployment runs on one replica, then let the
        # replacement start on an idle machine.
        while time.monotonic() - killed < LOAD_AFTER_KILL_S or (
            sum(o.status == 200 and o.sent > killed for o in outcomes) < 2 * CLIENTS
            and time.monotonic() - killed < 60
        ):
            time.sleep(0.1)
        stop.set()
        stopped = time.monotonic()
        for t in threads:
            t.join(timeout=2 * REQUEST_TIMEOUT_S)
        assert not any(t.is_alive() for t in threads), "a client is stuck"

        replacement = None
        while time.monotonic() - killed < RECOVERY_LIMIT_S:
            pids = replica_pids()
            if running_replicas() == 2 and len(pids) == 2 and victim not in pids:
                replacement = time.monotonic() - killed
                break
            time.sleep(0.5)
        # The service with its replacement: both kinds of request still answer.
        outcomes += [send(url, kind, clip) for kind in ("asr", "stream") * CLIENTS]
        health = requests.get(f"{url}/health", timeout=REQUEST_TIMEOUT_S).json()
        # Every model replica lost at once: no replica can take a request until Serve has
        # started new ones, so requests get a 503 after serve.replica_wait_s, not a hang.
        for pid in replica_pids():
            os.kill(pid, signal.SIGKILL)
        orphaned = [send(url, kind, clip) for kind in ("asr", "stream")]
        answered = time.monotonic()
    finally:
        stop.set()
        serve.shutdown()
        ray.shutdown()

    statuses = Counter(o.status for o in outcomes)
    cut = Counter(o.stream_error for o in outcomes if o.stream_error)
    degraded = Counter(o.status for o in outcomes if killed < o.sent < stopped)
    print(
        f"\nreplica loss: {len(outcomes)} requests: {statuses[200]} x 200 "
        f"({sum(cut.values())} of them streams ended by an error event), {statuses[503]} x 503; "
        f"sent in the {stopped - killed:.1f} s after the kill: {dict(degraded)}; "
        f"requests in flight on the killed replica, as the ingress counted them: "
        f"{health.get('replica_lost')}; replacement RUNNING after "
        f"{replacement and round(replacement, 1)} s; deploy {deployed - start:.0f} s, "
        f"test {time.monotonic() - start:.0f} s"
    )
    assert set(statuses) <= {200, 503}, statuses
    assert all(o.retry_after for o in outcomes if o.status == 503)
    assert set(cut) <= {"replica_unavailable"}, cut
    assert all(o.complete for o in outcomes), "a stream ended without [DONE]"
    assert degraded[200] > 0, degraded
    assert replacement is not None, f"no replacement replica within {RECOVERY_LIMIT_S} s"
    print(
        "every replica lost: "
        + ", ".join(f"{o.kind} {o.status} after {answered - o.sent:.1f} s" for o in orphaned)
    )
    assert [o.status for o in orphaned] == [503, 503], orphaned
    assert all(o.retry_after for o in orphaned)
    # At most one retry (a call routed to a dead replica), each bounded by the wait.
    assert answered - orphaned[0].sent < 2 * (2 * LIVE_WAIT_S + 2.0), orphaned
