"""Builders: the numbers live here, the modules stay small.

``build_model(config.model)`` loads both frozen backbones (embedded name, local folder or hub
id), builds the trainable steering MoE and projector, and the chat prompt template.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from steermoe import env
from steermoe.config import ModelConfig
from steermoe.model.core import SteerMoEModel, Trainable
from steermoe.model.ctc import CtcHead
from steermoe.model.encoder import WhisperEncoderWrapper
from steermoe.model.projector import Projector
from steermoe.model.prompt import build_template
from steermoe.model.steering import Router, SteeringExperts, SteeringMoE

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt")


def resolve_backbone(name: str, cache_dir: Path | None = None) -> str:
    """Embedded name -> converted local folder; local path -> itself; else a hub id."""
    from steermoe import tiny

    root = Path(cache_dir) if cache_dir else env.cache_dir()
    if name in tiny.TINY_NAMES:
        return str(tiny.ensure(name, root))
    from steermoe import backbones

    return str(backbones.resolve(name, cache_dir=root))


def torch_dtype(name: str, device: torch.device | str = "cpu") -> torch.dtype:
    """``auto`` -> bf16 on CUDA, fp32 elsewhere. ``bfloat16`` on a CPU without native bf16
    arithmetic (AVX512-BF16 or AMX) is honoured with a warning: there torch falls back to a
    scalar kernel and matrix products run ~80x slower than in fp32 (measured on an AVX2 EPYC)."""
    if name == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if name == "bfloat16" and slow_bf16(device):
        log.warning(
            "model.dtype=bfloat16 on a CPU without AVX512-BF16 or AMX: bf16 matrix products "
            "run about 80x slower than float32 here; use model.dtype=auto (float32 on CPU)"
        )
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX tiles)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def slow_bf16(device: torch.device | str) -> bool:
    """Whether bf16 compute on ``device`` is the CPU's scalar fallback (~80x slower than fp32)."""
    return torch.device(device).type == "cpu" and not cpu_has_bf16()


def fingerprint(path: str) -> dict:
    """Identity of a backbone: its id plus SHA-256 of every weight/config file in the folder.

    Hashes are cached in ``.steermoe-hashes.json`` next to the files, keyed by size and
    modification time, so a 500 MB backbone is hashed once.
    """
    folder = Path(path)
    if not folder.is_dir():
        return {"id": path, "sha256": {}}
    cache_file = folder / ".steermoe-hashes.json"
    try:
        cached = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cached = {}
    hashes, changed = {}, False
    for f in sorted(folder.iterdir()):
        if not f.is_file() or f.name.startswith(".") or not f.name.endswith(WEIGHT_SUFFIXES):
            continue
        st = f.stat()
        key = f"{st.st_size}:{st.st_mtime_ns}"
        entry = cached.get(f.name)
        if entry and entry.get("key") == key:
            hashes[f.name] = entry["sha256"]
            continue
        digest = hashlib.sha256()
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
        hashes[f.name] = digest.hexdigest()
        cached[f.name] = {"key": key, "sha256": hashes[f.name]}
        changed = True
    if changed:
        try:
            tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cached, indent=1))
            os.replace(tmp, cache_file)
        except OSError:
            pass  # read-only folder (e.g. a shared hub cache): hash again next time
    return {"id": path, "sha256": hashes}


def load_encoder(path: str, dtype: torch.dtype):
    """A Whisper-family encoder and its feature extractor from a folder or hub id."""
    from transformers import AutoConfig, WhisperFeatureExtractor, WhisperModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    config = AutoConfig.from_pretrained(path)
    if getattr(config, "model_type", None) != "whisper":
        raise ValueError(f"{path}: expected a Whisper-family model, got {config.model_type!r}")
    model = WhisperModel.from_pretrained(path, dtype=dtype)
    encoder = model.get_encoder()
    extractor = WhisperFeatureExtractor.from_pretrained(path)
    if extractor.feature_size != config.num_mel_bins:
        raise ValueError(
            f"{path}: feature extractor has {extractor.feature_size} mel bins, "
            f"encoder expects {config.num_mel_bins}"
        )
    return encoder, extractor


def load_llm(path: str, dtype: torch.dtype):
    """A causal LM and its tokenizer from a folder or hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    llm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return llm, tokenizer


def build_trainable(
    config: ModelConfig,
    *,
    encoder_dim: int,
    encoder_layers: int,
    llm_dim: int,
    embedding_rms: float = 1.0,
) -> tuple[Trainable, tuple[int, ...]]:
    """Steering MoE (when enabled), projector and CTC head (when weighted); returns them and
    the steered layer indices.

    Args:
        embedding_rms: RMS of the LLM's text embeddings (the projector norm's initial gain).
    """
    s = config.steering
    layers: tuple[int, ...] = ()
    steering = None
    if s.enabled:
        layers = tuple(s.layers) if s.layers is not None else tuple(range(encoder_layers))
        bad = [i for i in layers if i >= encoder_layers]
        if bad:
            raise ValueError(
                f"model.steering.layers: {bad} out of range for a {encoder_layers}-layer encoder"
            )
        steering = SteeringMoE(
            router=Router(dim=encoder_dim, num_layers=len(layers), num_experts=s.num_experts),
            experts=SteeringExperts(
                num_layers=len(layers),
                num_experts=s.num_experts,
                dim=encoder_dim,
                init_std=s.init_std,
                init_scale=s.init_scale,
            ),
            top_k=s.top_k,
            load_balance_weight=s.load_balance_weight,
            z_loss_weight=s.z_loss_weight,
        )
    p = config.projector
    projector = Projector(
        in_dim=encoder_dim,
        out_dim=llm_dim,
        stride=p.stride,
        pool=p.pool,
        kind=p.kind,
        hidden=p.hidden_size,
        norm_gain=embedding_rms if p.norm == "rms" else None,
    )
    ctc = None
    if config.ctc.weight > 0:
        ctc = CtcHead(dim=llm_dim, scale_init=config.ctc.scale_init, blank_std=embedding_rms)
    trainable = Trainable(
        steering=steering, projector=projector, ctc=ctc, ctc_weight=config.ctc.weight
    )
    return trainable, layers


def build_model(
    config: ModelConfig,
    *,
    device: torch.device | str = "cpu",
    cache_dir: Path | None = None,
    seed: int = 0,
) -> SteerMoEModel:
    """Load both frozen backbones and build the trainable part (seeded) on ``device``."""
    dtype = torch_dtype(config.dtype, device)
    encoder_path = resolve_backbone(config.encoder, cache_dir)
    llm_path = resolve_backbone(config.llm, cache_dir)
    encoder_dtype = torch.float32 if config.encoder_dtype == "float32" else dtype
    encoder, extractor = load_encoder(encoder_path, encoder_dtype)
    llm, tokenizer = load_llm(llm_path, dtype)
    table = llm.get_input_embeddings().weight
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        trainable, layers = build_trainable(
            config,
            encoder_dim=encoder.config.d_model,
            encoder_layers=len(encoder.layers),
            llm_dim=table.shape[1],
            embedding_rms=float(table.detach().float().pow(2).mean().sqrt()),
        )
    wrapper = WhisperEncoderWrapper(encoder, steer_layers=layers)
    wrapper.activation_checkpointing = config.activation_checkpointing
    if config.activation_checkpointing:
        llm.activation_checkpointing_enable({"use_reentrant": False})
    model = SteerMoEModel(
        encoder=wrapper,
        llm=llm,
        trainable=trainable,
        feature_extractor=extractor,
        tokenizer=tokenizer,
        template=build_template(tokenizer, config.system_prompt),
        identity={
            "encoder": {"name": config.encoder, **fingerprint(encoder_path)},
            "llm": {"name": config.llm, **fingerprint(llm_path)},
        },
    )
    model.tool_prompt = config.tool_prompt
    return model.to(device)
