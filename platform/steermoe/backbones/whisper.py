"""CTranslate2 Whisper (``model.bin`` + ``config.json`` + ``tokenizer.json``) -> Hugging Face.

The output folder loads offline with ``WhisperForConditionalGeneration.from_pretrained`` and
``WhisperProcessor.from_pretrained``: fp32 safetensors, config, generation config (language
and task tokens, suppressions, alignment heads), tokenizer with timestamp tokens and the
feature extractor.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .ct2 import Ct2Model

# Rank-0 settings CTranslate2 stores next to the weights; checked, not converted.
_SETTINGS = {
    "activation",
    "alibi",
    "alignment_heads",
    "alignment_layer",
    "num_heads",
    "pre_norm",
    "scale_embeddings",
    "start_from_zero_embedding",
}
# CTranslate2's ActivationType enum value for exact (erf) GELU, Whisper's activation.
_CT2_GELU = 3
_MAX_TARGET_POSITIONS = 448
_TIMESTAMPS = 1501  # <|0.00|> ... <|30.00|> in 0.02 s steps


def convert_whisper(
    model: Ct2Model,
    ct2_config: dict,
    tokenizer_json: Path,
    out_dir: Path,
    *,
    vocabulary: list[str] | None = None,
    progress: Callable[[str], None] = print,
) -> None:
    """Write a Hugging Face Whisper checkpoint converted from a CTranslate2 Whisper model.

    Args:
        model: The parsed ``model.bin`` (spec ``WhisperSpec``).
        ct2_config: The package's ``config.json`` (alignment heads, suppressed ids, ...).
        tokenizer_json: The package's ``tokenizer.json`` (BPE + special tokens).
        out_dir: Existing empty folder to write into.
        vocabulary: The package's ``vocabulary.txt`` lines, used to check token ids.
        progress: Called with one line per step.

    Raises:
        ValueError: The model is not a Whisper model this converter understands.
    """
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    if model.spec != "WhisperSpec":
        raise ValueError(f"expected a WhisperSpec CTranslate2 model, got {model.spec!r}")
    _check_settings(model)
    state, dims = _state_dict(model)
    tokenizer = _tokenizer(tokenizer_json, dims["vocab_size"], vocabulary)
    ids = _special_ids(tokenizer)
    multilingual = dims["vocab_size"] >= 51865  # whisper's own rule (English-only: 51864)

    config = WhisperConfig(
        **dims,
        max_target_positions=_MAX_TARGET_POSITIONS,
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        decoder_start_token_id=ids["<|startoftranscript|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"],
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        architectures=["WhisperForConditionalGeneration"],
    )
    progress(
        f"  Whisper d_model={config.d_model} layers={config.encoder_layers}/{config.decoder_layers}"
        f" heads={config.encoder_attention_heads} mels={config.num_mel_bins}"
        f" vocab={config.vocab_size} multilingual={multilingual}"
    )
    with torch.device("meta"):
        hf = WhisperForConditionalGeneration(config)
    missing = set(hf.state_dict()) - set(state) - {"proj_out.weight"}
    unexpected = set(state) - set(hf.state_dict())
    if missing or unexpected:
        raise ValueError(
            f"weight mapping mismatch: missing {sorted(missing)}, extra {sorted(unexpected)}"
        )
    hf.load_state_dict(state, strict=False, assign=True)
    hf.tie_weights()
    hf.eval()

    gen = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        max_length=_MAX_TARGET_POSITIONS,
        begin_suppress_tokens=config.begin_suppress_tokens,
        suppress_tokens=config.suppress_tokens,
        no_timestamps_token_id=ids["<|notimestamps|>"],
        prev_sot_token_id=ids["<|startofprev|>"],
        max_initial_timestamp_index=50,
        return_timestamps=False,
        is_multilingual=multilingual,
        alignment_heads=[list(h) for h in ct2_config.get("alignment_heads", [])],
    )
    if multilingual:
        gen.lang_to_id = {
            tokenizer.convert_ids_to_tokens(i): i for i in ct2_config.get("lang_ids", [])
        }
        gen.task_to_id = {t: ids[f"<|{t}|>"] for t in ("translate", "transcribe")}
        # Plain generate() detects the language and transcribes (the hub checkpoints get the
        # same from their deprecated forced_decoder_ids).
        gen.task = "transcribe"
    gen._from_model_config = False  # else generate(language=...) rebuilds it from the config
    hf.generation_config = gen

    progress(f"  writing {out_dir}")
    hf.save_pretrained(out_dir, safe_serialization=True)
    extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(out_dir)


def _check_settings(model: Ct2Model) -> None:
    expected = {"pre_norm": 1, "alibi": 0, "scale_embeddings": 0, "activation": _CT2_GELU}
    for side in ("encoder", "decoder"):
        for key, value in expected.items():
            name = f"{side}/{key}"
            if name in model.variables and model.scalar(name) != value:
                raise ValueError(f"{name} = {model.scalar(name)}; only {value} is supported")


def _state_dict(model: Ct2Model) -> tuple[dict[str, torch.Tensor], dict]:
    """Map CTranslate2 names to ``WhisperForConditionalGeneration`` names (fp32)."""
    used: set[str] = set()

    def get(name: str) -> np.ndarray:
        used.add(name)
        return model.get(name).astype(np.float32)

    def linear(src: str, dst: str, state: dict, bias: bool = True) -> None:
        state[f"{dst}.weight"] = get(f"{src}/weight")
        if bias:
            state[f"{dst}.bias"] = get(f"{src}/bias")

    def norm(src: str, dst: str, state: dict) -> None:
        state[f"{dst}.weight"] = get(f"{src}/gamma")
        state[f"{dst}.bias"] = get(f"{src}/beta")

    def split(src: str, dsts: list[str], state: dict) -> None:
        # A fused projection, stacked on dim 0. Whisper's key projection has no bias: CTranslate2
        # stores zeros there; refuse anything else rather than drop it silently.
        weights = np.split(get(f"{src}/weight"), len(dsts), axis=0)
        biases = np.split(get(f"{src}/bias"), len(dsts), axis=0)
        for dst, w, b in zip(dsts, weights, biases):
            state[f"{dst}.weight"] = w
            if dst.endswith("k_proj"):
                if np.abs(b).max() > 0:
                    raise ValueError(f"{src}: non-zero key bias cannot map to Whisper's k_proj")
            else:
                state[f"{dst}.bias"] = b

    def layer(src: str, dst: str, state: dict, cross: bool) -> None:
        sa = f"{dst}.self_attn"
        split(
            f"{src}/self_attention/linear_0",
            [f"{sa}.q_proj", f"{sa}.k_proj", f"{sa}.v_proj"],
            state,
        )
        linear(f"{src}/self_attention/linear_1", f"{sa}.out_proj", state)
        norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm", state)
        if cross:
            ca = f"{dst}.encoder_attn"
            linear(f"{src}/attention/linear_0", f"{ca}.q_proj", state)
            split(f"{src}/attention/linear_1", [f"{ca}.k_proj", f"{ca}.v_proj"], state)
            linear(f"{src}/attention/linear_2", f"{ca}.out_proj", state)
            norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm", state)
        linear(f"{src}/ffn/linear_0", f"{dst}.fc1", state)
        linear(f"{src}/ffn/linear_1", f"{dst}.fc2", state)
        norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm", state)

    def count(prefix: str) -> int:
        n = 0
        while f"{prefix}/layer_{n}/ffn/linear_0/weight" in model.variables:
            n += 1
        return n

    state: dict[str, np.ndarray] = {}
    enc_layers, dec_layers = count("encoder"), count("decoder")
    linear("encoder/conv1", "model.encoder.conv1", state)
    linear("encoder/conv2", "model.encoder.conv2", state)
    state["model.encoder.embed_positions.weight"] = get("encoder/position_encodings/encodings")
    for i in range(enc_layers):
        layer(f"encoder/layer_{i}", f"model.encoder.layers.{i}", state, cross=False)
    norm("encoder/layer_norm", "model.encoder.layer_norm", state)
    state["model.decoder.embed_tokens.weight"] = get("decoder/embeddings/weight")
    state["model.decoder.embed_positions.weight"] = get("decoder/position_encodings/encodings")
    for i in range(dec_layers):
        layer(f"decoder/layer_{i}", f"model.decoder.layers.{i}", state, cross=True)
    norm("decoder/layer_norm", "model.decoder.layer_norm", state)

    # The output projection must be the token embedding (Whisper ties them).
    target = model.aliases.get("decoder/projection/weight", "decoder/projection/weight")
    if target != "decoder/embeddings/weight":
        if target not in model.variables or not np.array_equal(
            model.variables[target], model.variables["decoder/embeddings/weight"]
        ):
            raise ValueError("decoder/projection/weight is not tied to the token embedding")
        used.add(target)
    leftover = {
        n for n in model.variables if n not in used and n.rsplit("/", 1)[-1] not in _SETTINGS
    }
    if leftover:
        raise ValueError(f"unmapped CTranslate2 variables: {sorted(leftover)}")

    conv1 = state["model.encoder.conv1.weight"]  # D, M, 3
    embed = state["model.decoder.embed_tokens.weight"]  # V, D
    d_model = conv1.shape[0]
    dims = {
        "vocab_size": embed.shape[0],
        "num_mel_bins": conv1.shape[1],
        "d_model": d_model,
        "encoder_layers": enc_layers,
        "decoder_layers": dec_layers,
        "encoder_attention_heads": _heads(model, "encoder", d_model),
        "decoder_attention_heads": _heads(model, "decoder", d_model),
        "encoder_ffn_dim": state["model.encoder.layers.0.fc1.weight"].shape[0],
        "decoder_ffn_dim": state["model.decoder.layers.0.fc1.weight"].shape[0],
        "max_source_positions": state["model.encoder.embed_positions.weight"].shape[0],
    }
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    return tensors, dims


def _heads(model: Ct2Model, side: str, d_model: int) -> int:
    # CTranslate2 >= 3 stores the head count; older files imply Whisper's 64-wide heads.
    name = f"{side}/num_heads"
    heads = int(model.scalar(name)) if name in model.variables else d_model // 64
    if d_model % heads:
        raise ValueError(f"{name}={heads} does not divide d_model={d_model}")
    return heads


def _tokenizer(tokenizer_json: Path, vocab_size: int, vocabulary: list[str] | None):
    """Build a ``WhisperTokenizer`` from ``tokenizer.json`` and add the timestamp tokens."""
    from transformers import AddedToken, WhisperTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.json").write_bytes(tokenizer_json.read_bytes())
        settings = {
            "tokenizer_class": "WhisperTokenizer",
            "model_max_length": 1024,
            "errors": "replace",
            "add_prefix_space": False,
            "bos_token": "<|endoftext|>",
            "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
        }
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(settings))
        tokenizer = WhisperTokenizer.from_pretrained(tmp)
    for key in ("is_local", "local_files_only"):  # loading artefacts, not settings
        tokenizer.init_kwargs.pop(key, None)
    first = len(tokenizer)
    stamps = [f"<|{i * 0.02:.2f}|>" for i in range(_TIMESTAMPS)]
    if first + len(stamps) != vocab_size:
        raise ValueError(
            f"tokenizer has {first} tokens; with {len(stamps)} timestamps that is not the model's {vocab_size}"
        )
    tokenizer.add_tokens(
        [AddedToken(s, lstrip=False, rstrip=False, normalized=False) for s in stamps]
    )
    if vocabulary is not None:
        if len(vocabulary) != vocab_size:
            raise ValueError(
                f"vocabulary.txt has {len(vocabulary)} entries, model has {vocab_size}"
            )
        tokens = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
        wrong = [i for i, (a, b) in enumerate(zip(tokens, vocabulary)) if a != b]
        if wrong:
            i = wrong[0]
            raise ValueError(
                f"{len(wrong)} token ids differ from vocabulary.txt, e.g. {i}: {tokens[i]!r} != {vocabulary[i]!r}"
            )
    return tokenizer


def _special_ids(tokenizer) -> dict[str, int]:
    names = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|notimestamps|>",
    ]
    ids = {}
    for name in names:
        i = tokenizer.convert_tokens_to_ids(name)
        if i is None or (i == tokenizer.unk_token_id and name != "<|endoftext|>"):
            raise ValueError(f"tokenizer lacks {name}")
        ids[name] = i
    return ids
