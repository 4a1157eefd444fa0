"""Markdown reference of every configuration key, generated from the config models.

The descriptions are the ``# comment`` lines written above each field in
:mod:`steermoe.config` (and :mod:`steermoe.synth.build_config`), read from the source with
:mod:`ast`; types, defaults and bounds come from the pydantic models themselves. So the
reference cannot drift from the code: ``tests/test_docs.py`` checks that the committed
``docs/configuration.md`` equals :func:`render_reference`. Regenerate it with::

    PYTHONPATH=platform:. python -m steermoe.config_docs > docs/configuration.md
"""

from __future__ import annotations

import ast
import functools
import inspect
import json
import sys
import textwrap
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from steermoe.config import Config, ConfigError, load_config
from steermoe.synth.build_config import BuildConfig

# Fields that have no comment in the source yet; the source comment wins once it exists.
# Keys are "<Model>.<field>"; tests check that every key still names a real field.
FALLBACK: dict[str, str] = {
    "OptimConfig.weight_decay": "AdamW weight decay of the trainable parameters.",
    "OptimConfig.betas": "AdamW (beta1, beta2).",
    "TrainConfig.seed": "Seed of model initialisation and data order.",
    "TrainConfig.use_gpu": "One GPU per Ray Train worker (bf16 with `model.dtype: auto`).",
    "AshaConfig.enabled": "Stop unpromising trials early (ASHA); false runs every trial to the end.",
    "AshaConfig.reduction_factor": "ASHA keeps 1 / reduction_factor of the trials at each rung.",
    "SweepConfig.name": "Sweep name (Tune experiment and MLflow parent run); keep it stable, "
    "`--resume` finds the sweep by it.",
    "SweepConfig.search": "How the space is searched: every grid combination, random draws "
    "or Optuna (TPE).",
    "SweepConfig.mode": "Direction of `sweep.metric`: `min` (WER, loss) or `max` (accuracy).",
    "SweepConfig.promote_mode": "Direction of `sweep.promote_metric`.",
    "SweepConfig.max_concurrent_trials": "Trials run at once; on a GPU cluster "
    "cluster GPUs // GPUs per trial (`train.num_workers` with `train.use_gpu`).",
    "EvalConfig.batch_size": "Examples decoded together (greedy, KV cache, left padding).",
    "EvalConfig.max_new_tokens": "Decode budget per example.",
    "ServeConfig.host": "Address Serve's HTTP proxy binds (127.0.0.1 = this machine only).",
    "ServeConfig.port": "Port of Serve's HTTP proxy.",
    "ServeConfig.min_replicas": "Autoscaling lower bound (replicas kept running).",
    "ServeConfig.max_replicas": "Autoscaling upper bound.",
    "ServeConfig.target_ongoing_requests": "Autoscaling target of in-flight requests per replica.",
    "ServeConfig.cpus_per_replica": "CPUs reserved by each replica.",
    "ServeConfig.gpus_per_replica": "GPUs reserved by each replica (fractions share a GPU).",
    "ServeConfig.max_batch_size": "Largest batch `@serve.batch` forms from concurrent requests.",
    "ServeConfig.batch_wait_timeout_s": "Seconds a batch waits to fill before it runs.",
    "ServeConfig.max_body_mb": "Largest request body accepted (413 above it).",
    "ServeConfig.max_audio_s": "Longest audio clip accepted per request (seconds).",
    "ServeConfig.max_tokens": "Upper bound of a request's `max_tokens` / "
    "`max_completion_tokens` (and the default).",
    "MlflowConfig.experiment": "MLflow experiment that runs and sweeps are logged to.",
    "MlflowConfig.alias": "Registry alias moved to the best model (Serve loads "
    "`models:/<registered_model>@<alias>`).",
    "SuiteConfig.counts": "Examples per split.",
    "SplitCounts.train": "Training examples.",
    "SplitCounts.validation": "Validation examples (voices disjoint from training).",
    "SplitCounts.test": "Test examples (voices disjoint from training and validation).",
    "EngineWeights.piper": "Piper neural TTS (most natural, slowest).",
    "EngineWeights.flite": "Debian flite voices (awb, rms, slt, kal, kal16).",
    "EngineWeights.espeak": "Debian espeak-ng voices and accents (fastest).",
    "EngineWeights.kokoro": "Kokoro-82M neural voices (Japanese speakers reading English; off).",
    "BuildConfig.snr_db": "SNR range in dB of the background noise (see `noise_prob`).",
    "BuildConfig.asr": "The ASR suite (spoken sentences).",
    "BuildConfig.aqa": "The audio question-answering suite.",
    "BuildConfig.fc": "The spoken function-calling suite.",
    "BuildConfig.engines": "Share of clips per TTS engine.",
    "BuildConfig.voices": "Voices held out for validation and test.",
}

# Bad overrides whose real error messages the reference shows (computed, never hand-written).
ERROR_EXAMPLES = (
    "model.steering.top_k=8",
    "model.steering.num_expert=4",
    "train.optim.lr_steering=-1",
    "train.batch_size=eight",
    "serve.min_replicas=3",
)
_ERROR_BASE = "jobs/configs/train_tiny.yaml"
_REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------ source comments


@functools.cache
def field_comments(cls: type[BaseModel]) -> dict[str, str]:
    """``{field: comment}`` for the fields declared in ``cls`` itself (not its bases).

    The comment is the run of ``#`` lines directly above the field's annotated assignment,
    joined into one line.
    """
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    (node,) = ast.parse(source).body
    out: dict[str, str] = {}
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        block: list[str] = []
        i = stmt.lineno - 2  # the line above, 0-based
        while i >= 0 and lines[i].strip().startswith("#"):
            block.insert(0, lines[i].strip().lstrip("#").strip())
            i -= 1
        if block:
            out[stmt.target.id] = " ".join(block)
    return out


def describe(cls: type[BaseModel], name: str) -> str:
    """The field's source comment (searching base classes too), else the fallback, else, for
    a nested section, the first line of its model's docstring; '' if there is none."""
    for klass in cls.__mro__:
        if isinstance(klass, type) and issubclass(klass, BaseModel) and klass is not BaseModel:
            comment = field_comments(klass).get(name)
            if comment:
                return comment
    for klass in cls.__mro__:
        text = FALLBACK.get(f"{klass.__name__}.{name}")
        if text:
            return text
    sub = _submodel(cls.model_fields[name].annotation)
    if sub is not None and sub.__doc__:
        return inspect.getdoc(sub).splitlines()[0]
    return ""


# ------------------------------------------------------------------------ types, defaults


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def type_name(annotation: Any) -> str:
    """A short, YAML-minded rendering of a field's type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(json.dumps(a) if isinstance(a, str) else str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list[{type_name(args[0])}]"
        return f"[{', '.join(type_name(a) for a in args)}]"
    if origin is dict:
        return f"map[{type_name(args[0])}, {type_name(args[1])}]"
    if annotation is typing.Any:
        return "any"
    if isinstance(annotation, type):
        return {"str": "string", "bool": "bool", "int": "int", "float": "float"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)


def _yaml_value(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, dict):
        inner = ", ".join(f"{k}: {_yaml_value(v)}" for k, v in value.items())
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value) if value == "" or ": " in value or "#" in value else value
    return repr(value)


def default_text(info: FieldInfo) -> str:
    """The field's default as YAML would spell it."""
    value = info.default_factory() if info.default_factory is not None else info.default
    return f"`{_yaml_value(value)}`"


def bounds(info: FieldInfo) -> str:
    """Numeric and length bounds of a field (``>= 1, <= 256``)."""
    parts = []
    for m in info.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if isinstance(m, getattr(annotated_types, attr.capitalize())):
                parts.append(f"{sign} {getattr(m, attr)}")
        if isinstance(m, annotated_types.MinLen) and m.min_length:
            parts.append("not empty")
        pattern = getattr(m, "pattern", None)
        if pattern:
            parts.append(f"matches `{pattern}`")
    return ", ".join(parts)


# ------------------------------------------------------------------------------ rendering


def sections(cls: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    """``(key path, model)`` for ``cls`` and every nested model, depth first."""
    yield prefix, cls
    for name, info in cls.model_fields.items():
        sub = _submodel(info.annotation)
        if sub is not None:
            yield from sections(sub, f"{prefix}.{name}" if prefix else name)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_model(path: str, cls: type[BaseModel], *, level: int = 3) -> str:
    """One section: heading, the model's docstring and a table of its fields."""
    doc = inspect.getdoc(cls) or ""
    title = f"`{path}`" if path else "top level"
    out = [f"{'#' * level} {title}", ""]
    if doc and not doc.startswith(("Usage docs", "A base class")):
        out += [doc.splitlines()[0], ""]
    out += ["| key | type | default | description |", "|---|---|---|---|"]
    for name, info in cls.model_fields.items():
        key = f"{path}.{name}" if path else name
        sub = _submodel(info.annotation)
        desc = describe(cls, name)
        if sub is not None:
            anchor = key.replace(".", "")
            default = f"see [`{key}`](#{anchor})"
            kind = "section"
        else:
            default = default_text(info)
            kind = _cell(type_name(info.annotation))
            limits = bounds(info)
            if limits:
                kind += f" ({_cell(limits)})"
        out.append(f"| `{key}` | {kind} | {_cell(default)} | {_cell(desc)} |")
    return "\n".join(out)


def _error_examples() -> str:
    rows = []
    for override in ERROR_EXAMPLES:
        try:
            base = _REPO / _ERROR_BASE
            load_config(base if base.is_file() else None, [override])
        except ConfigError as exc:
            message = str(exc)
        else:  # pragma: no cover - a change in the validators; the test notices
            message = "(accepted)"
        rows.append(f"$ python -m jobs.train {_ERROR_BASE} {override}\nerror: {message}")
    return "\n".join(rows)


HEADER = """\
# Configuration reference

<!-- Generated by `python -m steermoe.config_docs` from platform/steermoe/config.py and
platform/steermoe/synth/build_config.py. Do not edit by hand: tests/test_docs.py fails when
this file and the models disagree. -->

Every job takes one YAML file plus optional `key.sub=value` overrides:

```bash
python -m jobs.train jobs/configs/train_tiny.yaml train.max_steps=20 model.steering.top_k=null
python -m jobs.sweep jobs/configs/sweep_tiny.yaml 'sweep.space={model.steering.num_experts: [2, 8]}'
```

A YAML file holds values only, and only the keys it changes: every key below has a default.
A file may also build on another: a top-level `base: other.yaml` (relative to the file's own
folder) reads that file first, and this one then holds only its differences. Mappings merge
key by key; any other value, a list included, replaces the base's (`curriculum: []` clears a
base's curriculum). Bases may chain, as the reference runs do (`reference_g.yaml` ->
`reference_f.yaml` -> ... -> `reference.yaml`), and so do the data build configs
(`data_reference_k.yaml` -> `data_reference.yaml`); a missing base or a chain that comes back
to a file already in it stops the job with the files named.
Override values are parsed as YAML (`null`, `true`, `[1, 2]`, `{a: 1}`). The tree is strict
and frozen: an unknown key, a wrong type or an impossible value stops the job before any work
starts, with the key path named (exit status 2). These messages are produced by the code when
this page is generated:

```text
{errors}
```

Shipped files: `jobs/configs/*_tiny.yaml` are the CPU twins (seconds to minutes on 2 cores),
`demo.yaml` is `make demo`'s sweep, `reference.yaml`, `sweep.yaml` and `serve.yaml` the
embedded default (Whisper base + SmolLM2-135M; `serve.yaml` serves the shipped
`embedded:reference` checkpoint), `*_large.yaml` the full size (Whisper-large-v3 + Qwen2.5-7B on a GPU cluster). The
`data_*.yaml` files configure `python -m jobs.build_data` (last section).

## Job configuration (`steermoe.config.Config`)

Read by `jobs.train`, `jobs.sweep`, `jobs.evaluate`, `jobs.serve`, `jobs.demo`,
`jobs.bench_serve` and `jobs.bench_train`.

Contents: {toc}
"""

BUILD_HEADER = """\
## Data build configuration (`steermoe.synth.build_config.BuildConfig`)

Read by `python -m jobs.build_data jobs/configs/data_tiny.yaml [key.sub=value ...]`
(`jobs/configs/data_reference.yaml` is what the reference checkpoint was trained on,
`jobs/configs/data_default.yaml` the full build). Same strictness as above.
"""


def render_reference() -> str:
    """The whole Markdown reference (what ``docs/configuration.md`` holds)."""
    parts = list(sections(Config))
    toc = ", ".join(f"[`{p}`](#{p.replace('.', '')})" for p, _ in parts if p)
    header = HEADER.replace("{errors}", _error_examples()).replace("{toc}", toc)
    body = [header.rstrip()]
    for path, cls in parts:
        if path:  # the top level only lists the sections
            body.append(render_model(path, cls))
    body.append(BUILD_HEADER.rstrip())
    for path, cls in sections(BuildConfig):
        body.append(render_model(path, cls))
    return "\n\n".join(body) + "\n"


def main() -> int:
    sys.stdout.write(render_reference())
    return 0


if __name__ == "__main__":
    sys.exit(main())
