"""The real converted backbones (Whisper base + SmolLM2-135M) can be steered to memorise.

Needs ``python -m jobs.prepare_backbones`` (``make test`` runs it first).
"""

from __future__ import annotations

import pytest
import torch

from steermoe import backbones
from steermoe.config import load_config
from steermoe.data.audio import load_audio
from steermoe.data.heldout import DatasetUnavailable, librivox
from steermoe.model import build_model
from steermoe.optim import build_optimizer

pytestmark = [pytest.mark.backbones, pytest.mark.slow]


@pytest.fixture(scope="module")
def clips():
    try:
        examples = librivox()[:4]
    except DatasetUnavailable as exc:
        pytest.skip(str(exc))
    # Two seconds of each clip, paired with a short distinct answer to memorise.
    audios = [load_audio(ex.audio_path, example_id=ex.id)[: 2 * 16000] for ex in examples]
    return audios, ["alpha one", "bravo two", "charlie three", "delta four"]


def test_steering_memorises_a_handful_of_real_clips(clips):
    if not all(backbones.is_prepared(n) for n in ("whisper-base", "smollm2-135m-instruct")):
        pytest.skip("run python -m jobs.prepare_backbones first")
    torch.set_num_threads(2)
    cfg = load_config(
        None,
        [
            "model.encoder=whisper-base",
            "model.llm=smollm2-135m-instruct",
            "model.steering.num_experts=4",
            "train.optim.lr_projector=0.003",
        ],
    )
    model = build_model(cfg.model, seed=0)
    audios, targets = clips
    batch = model.collate(audios, ["Transcribe the audio."] * 4, targets)
    optimizer = build_optimizer(model, cfg.train.optim)
    model.train()
    losses = []
    for _ in range(60):
        loss = model(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in model.trainable_parameters()], 1.0)
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < 0.25 * losses[0], losses[::10]
    model.eval()
    out = model.generate(model.collate(audios, ["Transcribe the audio."] * 4), max_new_tokens=8)
    assert sum(p.strip().lower() == t for p, t in zip(out.texts, targets)) >= 3, out.texts


@pytest.mark.parametrize(
    "name",
    [
        "reference",
        "reference-b",
        "reference-c",
        "reference-d",
        "reference-e",
        "reference-f",
        "reference-g",
        "reference-h",
    ],
)  # b: serve.yaml's
def test_shipped_reference_checkpoint_loads_against_freshly_prepared_backbones(clips, name):
    """The embedded checkpoint names its backbones by file hashes: a machine that prepared
    them from the pinned packages must reproduce those hashes, or loading fails loudly."""
    if not all(backbones.is_prepared(n) for n in ("whisper-base", "smollm2-135m-instruct")):
        pytest.skip("run python -m jobs.prepare_backbones first")
    from steermoe.serve.loading import load_model

    torch.set_num_threads(2)
    model, header, folder = load_model(f"embedded:{name}")
    assert folder.name == name and header["step"] > 0
    assert header["model_config"]["steering"]["num_experts"] == 4
    ex = librivox()[0]
    audio = load_audio(ex.audio_path, example_id=ex.id)
    out = model.generate(model.collate([audio], [ex.instruction]), max_new_tokens=64)
    text = out.texts[0]
    assert text.strip(), "the reference model produced no text"
    # Decoding stops (end of turn or the repetition guard) well short of the token budget.
    assert len(out.token_ids[0]) < 64, text
