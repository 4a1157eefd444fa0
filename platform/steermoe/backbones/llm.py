"""GGUF causal LM (llama architecture, any ggml quantisation) -> plain Hugging Face checkpoint.

transformers reads the GGUF metadata and dequantises the tensors (with the ``gguf`` package);
we rebuild an ordinary fp32 ``LlamaForCausalLM`` from them and ``save_pretrained`` it with the
tokenizer and chat template, so loading needs neither ``gguf`` nor ``accelerate`` (which
``from_pretrained(gguf_file=...)`` requires).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch


def convert_gguf_llm(
    gguf_path: Path, out_dir: Path, *, progress: Callable[[str], None] = print
) -> None:
    """Write a Hugging Face causal LM (fp32 safetensors + tokenizer) converted from GGUF.

    Args:
        gguf_path: The ``.gguf`` file.
        out_dir: Existing empty folder to write into.
        progress: Called with one line per step.

    Raises:
        ValueError: Unsupported architecture, or tensors that do not match the model.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    folder, name = str(gguf_path.parent), gguf_path.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if config.model_type != "llama":
        raise ValueError(f"{name}: expected a llama-architecture GGUF, got {config.model_type!r}")
    if hasattr(config, "_model_name_or_path"):  # GGUF general.name, not a loadable path
        del config._model_name_or_path
    config.architectures = ["LlamaForCausalLM"]
    progress(
        f"  {config.model_type}: {config.num_hidden_layers} layers, hidden {config.hidden_size},"
        f" heads {config.num_attention_heads}/{config.num_key_value_heads}, vocab {config.vocab_size}"
    )

    progress("  dequantising tensors")
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    tensors = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=skeleton)[
        "tensors"
    ]
    expected = set(skeleton.state_dict())
    if config.tie_word_embeddings:
        expected.discard("lm_head.weight")
    missing, extra = expected - set(tensors), set(tensors) - expected
    if missing or extra:
        raise ValueError(
            f"{name}: tensors do not match the model: missing {sorted(missing)}, extra {sorted(extra)}"
        )

    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=False)
    model.tie_weights()
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    model.generation_config._from_model_config = False

    progress("  building tokenizer and chat template")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if not tokenizer.chat_template:
        raise ValueError(f"{name}: no chat template in the GGUF metadata")
    if tokenizer.eos_token_id != config.eos_token_id:
        raise ValueError(
            f"{name}: tokenizer eos {tokenizer.eos_token_id} != model eos {config.eos_token_id}"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.model_max_length = config.max_position_embeddings
    for key in ("is_local", "local_files_only", "gguf_file"):  # loading artefacts
        tokenizer.init_kwargs.pop(key, None)

    progress(f"  writing {out_dir}")
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
