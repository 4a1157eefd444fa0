"""Tiny random backbones (`tiny-random-whisper`, `tiny-random-llm`) for tests and CPU twins.

They are real Hugging Face models and tokenizers with random weights, built deterministically
from a seed in about a second, so every code path (encoder wrapper, chat template, generation,
checkpoints, DeepSpeed, Ray) runs without downloading or converting anything.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

TINY_NAMES = ("tiny-random-whisper", "tiny-random-llm")
# Bump when the tiny configs change: cached copies with another version are rebuilt.
TINY_VERSION = "2"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = (
    "the quick brown fox jumps over the lazy dog. transcribe the audio. "
    "what is the weather in paris tomorrow? set a timer for ten minutes. "
    "zero one two three four five six seven eight nine ten. yes no maybe. "
    "you are a helpful assistant that listens to audio. call the tool. "
    '[{"name": "get_weather", "arguments": {"city": "Paris"}}] [] '
)


def whisper_config():
    """A 2-layer, 64-wide Whisper with Whisper's full 30 s window (1500 encoder positions)."""
    from transformers import WhisperConfig

    return WhisperConfig(
        vocab_size=128,
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=128,
        max_source_positions=1500,
        max_target_positions=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )


def build_tokenizer():
    """A byte-level BPE tokenizer with ChatML special tokens and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def llm_config(vocab_size: int):
    """A 2-layer, 64-wide Llama."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=True,
    )


def build(name: str, dest: Path, *, seed: int = 0) -> Path:
    """Write one tiny backbone (model + tokenizer/feature extractor) to ``dest``."""
    from transformers import LlamaForCausalLM, WhisperFeatureExtractor, WhisperModel

    if name not in TINY_NAMES:
        raise ValueError(f"unknown tiny backbone {name!r}; choose one of {TINY_NAMES}")
    torch.manual_seed(seed)
    dest.mkdir(parents=True, exist_ok=True)
    if name == "tiny-random-whisper":
        WhisperModel(whisper_config()).save_pretrained(dest)
        WhisperFeatureExtractor(feature_size=80).save_pretrained(dest)
    else:
        tok = build_tokenizer()
        LlamaForCausalLM(llm_config(len(tok))).save_pretrained(dest)
        tok.save_pretrained(dest)
    return dest


def ensure(name: str, root: Path) -> Path:
    """The folder of tiny backbone ``name`` under ``root``, built on first use.

    Safe with concurrent callers (several Ray workers on one machine): a file lock serialises
    the build, which is written to a temporary folder and renamed into place.
    """
    import fcntl

    final = root / "backbones" / name
    marker = final / ".tiny-version"
    if marker.exists() and marker.read_text() == TINY_VERSION and (final / "config.json").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (
            marker.exists()
            and marker.read_text() == TINY_VERSION
            and (final / "config.json").exists()
        ):
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final.parent))
        build(name, tmp)
        (tmp / ".tiny-version").write_text(TINY_VERSION)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    return final
