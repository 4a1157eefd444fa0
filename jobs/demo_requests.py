"""The demo's requests and summary (kept apart from jobs/demo.py, which only orchestrates)."""

from __future__ import annotations

import json

from evaluators import asr, audio_qa, function_calling
from steermoe.config import Config
from steermoe.data.heldout import DatasetUnavailable, librivox, named_dataset
from steermoe.serve import client as api
from steermoe.sweep import latest_parent, summary_rows
from steermoe.train.data import data_root


def ask_all(base_url: str, config: Config) -> None:
    """A real held-out clip, a spoken question and a spoken tool request."""
    c = api.client(base_url, config.serve.api_key_env)
    name = config.serve.served_name
    clip = librivox()[0]
    text = api.transcribe(c, clip.audio_path, name)
    wer = asr.score([text], [clip.target])["wer"]
    print(f"[transcription] {clip.audio_path}\n  expected:   {clip.target}")
    print(f"  prediction: {text!r}\n  {mark(wer <= 50)} WER {wer:.0f} % (a mark at <= 50 %)")
    root = data_root(config.data)
    for suite in ("synthetic-aqa", "synthetic-fc"):
        try:
            ex = named_dataset(suite, root=root)[0]
        except (DatasetUnavailable, IndexError) as exc:
            print(f"[{suite}] skipped: {exc}")
            continue
        text = ex.instruction if suite == "synthetic-aqa" else "Call the right tool."
        message = api.chat_with_audio(
            c, ex.audio_path, text, tools=ex.tools, model=name, max_tokens=config.serve.max_tokens
        )
        calls = [f"{t.function.name}({t.function.arguments})" for t in message.tool_calls or []]
        print(f"[{suite}] {ex.audio_path}\n  instruction: {text[:120]}")
        print(f"  expected:    {ex.target}")
        print(f"  answer:      {message.content!r}" + (f"  tool_calls: {calls}" if calls else ""))
        print(
            f"  {mark(is_right(suite, ex, message))} {'right' if is_right(suite, ex, message) else 'wrong'}"
        )


def mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def is_right(suite: str, ex, message) -> bool:
    """The leaderboard rule for the example: MMAU/exact match for AQA, BFCL AST for calls."""
    if suite == "synthetic-aqa":
        return (
            audio_qa.score(
                [message.content or ""],
                [(ex.meta or {}).get("answers") or ex.target],
                kind=[ex.kind or "open"],
                choices=[ex.choices],
            )["accuracy"]
            == 1.0
        )
    calls = [
        {"name": t.function.name, "arguments": json.loads(t.function.arguments or "{}")}
        for t in message.tool_calls or []
    ]
    answer = json.dumps(calls) if calls else (message.content or "")
    return (
        function_calling.score(
            [answer], [ex.expected_calls or []], [ex.tools or []], [ex.category]
        )["accuracy"]
        == 1.0
    )


def summary(uri: str, config: Config) -> str | None:
    """Print the sweep's trials as a table; return where its HTML report is."""
    rows = summary_rows(uri, config.mlflow.experiment, config.sweep.name)

    def fmt(v, spec=".1f"):
        return "-" if v is None else format(v, spec)

    print(
        f"{'trial':<12}{'experts':>8}{'top_k':>7}{'WER %':>8}{'AQA acc':>9}{'FC acc':>8}"
        f"{'min':>7}  status"
    )
    for r in rows:
        print(
            f"{r['trial']:<12}{r['num_experts']:>8}{r['top_k']:>7}{fmt(r['wer']):>8}"
            f"{fmt(r['aqa_accuracy'], '.2f'):>9}{fmt(r['fc_accuracy'], '.2f'):>8}"
            f"{r['minutes']:>7.1f}  {r['status']}"
        )
    return report_location(uri, config)


def report_location(uri: str, config: Config) -> str | None:
    """The sweep report logged under the latest parent run's artifacts."""
    from steermoe import tracking

    parent = latest_parent(tracking.client(uri), config.mlflow.experiment, config.sweep.name)
    return f"{parent.info.artifact_uri}/report/report.html" if parent else None
