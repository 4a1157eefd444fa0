"""The pieces that make the module listen: CTC head, projector norm, prompt without a system
turn, task/length bucketing, curriculum stages, audio gain and resume checks (tiny backbones)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from steermoe.config import ConfigError, load_config, to_dict
from steermoe.data import batches as train_data
from steermoe.data.batches import Loaded, TrainStream, instruction, plan_stages
from steermoe.data.examples import Example
from steermoe.data.sampler import LengthBucketSampler
from steermoe.data.sources import DataError
from steermoe.data.tools import compact_instruction, tool_instruction
from steermoe.model import build_model
from steermoe.model.ctc import CtcHead
from steermoe.model.prompt import build_template
from steermoe.optim import param_groups
from steermoe.tracking import fmt_seconds
from steermoe.train.loop import Pace, check_resumable, swapped_audio_batch

TINY = ["model.encoder=tiny-random-whisper", "model.llm=tiny-random-llm"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def waves(*seconds, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(16000 * s))).astype(np.float32) for s in seconds]


# ---------------------------------------------------------------------------------- CTC


def test_ctc_head_matches_naive_ctc_over_restricted_vocabulary():
    torch.manual_seed(0)
    head = CtcHead(dim=6, scale_init=2.0, blank_std=0.5)
    table = torch.randn(20, 6)
    head.set_vocabulary([3, 7, 11], vocab_size=20)
    audio = torch.randn(2, 5, 6)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    targets = [torch.tensor([7, 3, 19]), torch.tensor([11])]  # 19 is outside: dropped
    got = head(audio, mask, targets, table)
    rows = torch.cat([head.blank[None], table[[3, 7, 11]]])
    logp = (2.0 * audio @ rows.T).log_softmax(-1)
    want = F.ctc_loss(
        logp.transpose(0, 1),
        torch.tensor([2, 1, 3]),  # 7 -> 2, 3 -> 1, 11 -> 3 (0 is the blank)
        torch.tensor([5, 3]),
        torch.tensor([2, 1]),
        blank=0,
    )
    torch.testing.assert_close(got, want)


def test_ctc_loss_is_logged_weighted_and_trains_with_the_projector(cache):
    cfg = load_config(None, [*TINY, "model.ctc.weight=0.5"])
    model = build_model(cfg.model, cache_dir=cache)
    batch = model.collate(waves(1.0, 1.4), ["", ""], ["hello there", "a b c"])
    out = model(batch)
    assert out["ctc_loss"] > 0
    aux = out["aux_loss"]
    torch.testing.assert_close(out["loss"], out["lm_loss"] + aux + 0.5 * out["ctc_loss"])
    out["loss"].backward()
    assert model.trainable.ctc.log_scale.grad is not None
    assert model.trainable.projector.net.weight.grad.abs().sum() > 0
    groups = {g["name"]: g["params"] for g in param_groups(model, cfg.train.optim)}
    assert [id(p) for p in groups["ctc"]] == [
        id(model.trainable.ctc.blank),
        id(model.trainable.ctc.log_scale),
    ]
    lrs = {g["name"]: g["lr"] for g in param_groups(model, cfg.train.optim)}
    assert lrs["ctc"] == cfg.train.optim.lr_ctc == 1e-2
    off = build_model(load_config(None, TINY).model, cache_dir=cache)
    assert off.trainable.ctc is None
    assert float(off(batch)["ctc_loss"]) == 0.0


def test_ctc_scores_the_words_spoken_not_an_answer_and_skips_unknown_clips(cache):
    asr = Example("a", "a.wav", 1.0, "asr", "", "hello there")
    aqa = Example("q", "q.wav", 1.4, "aqa", "Who speaks?", "male", meta={"spoken": "a b c"})
    fc = Example("f", "f.wav", 1.2, "fc", "Tools: ...", "[]")  # words unknown
    assert (asr.transcript, aqa.transcript, fc.transcript) == ("hello there", "a b c", None)
    cfg = load_config(None, [*TINY, "model.ctc.weight=0.5"])
    model = build_model(cfg.model, cache_dir=cache)
    audio = waves(1.0, 1.4, 1.2)
    spoken = model.collate(
        audio,
        ["", "q", "t"],
        ["hello there", "male", "[]"],
        transcripts=[asr.transcript, aqa.transcript, fc.transcript],
    )
    assert spoken.transcript_ids[2] is None
    # The CTC term equals the one over the two clips whose words are known, scored on them.
    known = model.collate(audio[:2], ["", "q"], ["hello there", "a b c"])
    torch.testing.assert_close(model(spoken)["ctc_loss"], model(known)["ctc_loss"])
    assert float(model(spoken)["ctc_loss"]) != float(
        model(model.collate(audio[:2], ["", "q"], ["hello there", "male"]))["ctc_loss"]
    )
    # No clip with known words: a zero that still reaches every CTC parameter.
    none = model.collate(audio[2:], ["t"], ["[]"], transcripts=[None])
    out = model(none)
    assert float(out["ctc_loss"]) == 0.0
    out["loss"].backward()
    assert model.trainable.ctc.blank.grad is not None


# ------------------------------------------------------------------------- scale at init


def test_projector_norm_puts_audio_tokens_at_text_embedding_scale(cache):
    for norm in ("rms", "none"):
        cfg = load_config(None, [*TINY, f"model.projector.norm={norm}"])
        model = build_model(cfg.model, cache_dir=cache)
        batch = model.collate(waves(2.0), [""])
        with torch.no_grad():
            audio, mask = model.project(batch.features, batch.feature_lengths)
        rms = float(audio[mask].pow(2).mean().sqrt())
        text = float(model.llm.get_input_embeddings().weight.float().pow(2).mean().sqrt())
        if norm == "rms":
            assert rms == pytest.approx(text, rel=0.05)
        else:
            assert model.trainable.projector.norm is None


# ---------------------------------------------------------------------------------- prompt


class _Tok:
    """Minimal tokenizer with a ChatML template that inserts a default system turn."""

    chat_template = "x"
    bos_token = "<|im_start|>"
    eos_token = "<|im_end|>"
    eos_token_id = 1
    all_special_tokens = ("<|im_start|>", "<|im_end|>")
    all_special_ids = (0, 1)

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        if messages[0]["role"] != "system":
            messages = [{"role": "system", "content": "DEFAULT"}, *messages]
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=False):
        ids = []
        for piece in text.replace("<|im_start|>", " \x01 ").replace("<|im_end|>", " \x02 ").split():
            ids.append({"\x01": 0, "\x02": 1}.get(piece, 2 + len(piece)))
        return {"input_ids": ids}


def test_no_system_prompt_removes_the_templates_default_system_turn_too():
    tok = _Tok()
    with_system = build_template(tok, "Be brief.")
    assert with_system.rendered.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    for none in (None, ""):
        bare = build_template(tok, none)
        assert bare.rendered.startswith("<|im_start|>user\n")
        assert "system" not in bare.rendered and "DEFAULT" not in bare.rendered
        assert len(bare.prefix_ids) < len(with_system.prefix_ids)


# ------------------------------------------------------------------- batches and stages


def test_sampler_groups_never_mix_and_sort_by_length():
    lengths = [float(i % 17) for i in range(60)]
    groups = ["asr" if i % 3 else "fc" for i in range(60)]
    s = LengthBucketSampler(lengths, 4, groups=groups, seed=3)
    batches = s.batches()
    assert sorted(i for b in batches for i in b) == list(range(60))
    for b in batches:
        assert len({groups[i] for i in b}) == 1
        assert [lengths[i] for i in b] == sorted(lengths[i] for i in b)
    with pytest.raises(ValueError, match="groups has 3 entries"):
        LengthBucketSampler(lengths, 4, groups=["a", "b", "c"])


def _examples():
    rows = []
    for i in range(12):
        task = "asr" if i < 8 else "fc"
        rows.append(
            Example(
                id=f"e{i}",
                audio_path=f"/x/{i}.wav",
                duration_s=1.0 + i,
                task=task,
                instruction="",
                target="t",
            )
        )
    return rows


def test_curriculum_stages_filter_by_task_and_length_and_name_an_empty_stage():
    cfg = load_config(
        None,
        [*TINY, "train.curriculum=[{steps: 3, tasks: [asr], max_audio_s: 4}, {tasks: [asr, fc]}]"],
    )
    stages = plan_stages(_examples(), cfg.train.curriculum)
    assert stages[0].members == [0, 1, 2, 3] and stages[0].steps == 3  # 1-4 s clips
    assert stages[1].first_step == 3 and stages[1].members == list(range(12))
    empty = load_config(None, [*TINY, "train.curriculum=[{tasks: [aqa], max_audio_s: 2}]"])
    with pytest.raises(DataError, match=r"train.curriculum.0: no training example.*\['aqa'\]"):
        plan_stages(_examples(), empty.train.curriculum)


def test_curriculum_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"train.curriculum.0.steps: only the last stage"):
        load_config(None, ["train.curriculum=[{tasks: [asr]}, {tasks: [fc]}]"])
    with pytest.raises(ConfigError, match=r"train.curriculum.0.tasks"):
        load_config(None, ["train.curriculum=[{tasks: [speech]}]"])
    with pytest.raises(ConfigError, match=r"train.curriculum.0.tasks: names \['fc'\]"):
        load_config(None, ["data.tasks=[asr]", "train.curriculum=[{tasks: [fc]}]"])


def test_stream_switches_stage_and_resumes_in_it(monkeypatch):
    def fake_load(examples, data, max_s=None):
        return train_data.Loaded(examples, [np.zeros(10)] * len(examples), [])

    monkeypatch.setattr(train_data, "load_batch", fake_load)
    cfg = load_config(
        None,
        [*TINY, "train.curriculum=[{steps: 2, tasks: [asr], max_audio_s: 4.5}, {tasks: [fc]}]"],
    )

    def stream():
        return TrainStream(
            _examples(),
            batch_size=2,
            rank=0,
            world_size=1,
            seed=0,
            data=cfg.data,
            curriculum=cfg.train.curriculum,
        )

    a = stream()
    it = iter(a)
    seen = [[ex.task for ex in next(it).examples] for _ in range(4)]
    assert seen[0] == seen[1] == ["asr", "asr"] and seen[2] == seen[3] == ["fc", "fc"]
    state = a.state_dict()
    after = [ex.id for ex in next(it).examples]
    b = stream()
    b.load_state_dict(state)
    assert b.stage.index == 1
    assert [ex.id for ex in next(iter(b)).examples] == after
    with pytest.raises(ValueError, match="stage 5"):
        stream().load_state_dict({**state, "stage": 5})


# -------------------------------------------------------------------------------- resume


def test_resume_refuses_a_changed_config_and_allows_a_longer_run():
    saved = to_dict(load_config(None, TINY))
    check_resumable(saved, load_config(None, [*TINY, "train.max_steps=900", "eval.batch_size=2"]))
    with pytest.raises(ValueError, match=r"model.ctc.weight: 0.0 -> 0.3.*train.name"):
        check_resumable(saved, load_config(None, [*TINY, "model.ctc.weight=0.3"]))


# ------------------------------------------------------------------------------ audio gain


def test_audio_gain_is_zero_for_identical_clips_and_reported(cache, tmp_path):
    cfg = load_config(None, TINY)
    model = build_model(cfg.model, cache_dir=cache)
    same = waves(1.0) * 3
    loaded = Loaded(_examples()[:3], same, [])
    batch = model.collate(same, ["", "", ""], ["t", "t", "t"])
    swapped = swapped_audio_batch(model, loaded, "", "cpu")
    with torch.no_grad():
        assert math.isclose(
            float(model(batch)["lm_loss"]), float(model(swapped)["lm_loss"]), rel_tol=1e-5
        )
    distinct = waves(1.0, 1.5, 2.0)
    swapped = swapped_audio_batch(model, Loaded(_examples()[:3], distinct, []), "", "cpu")
    assert [int(n) for n in swapped.feature_lengths] == [
        int(n) for n in model.collate(distinct[1:] + distinct[:1], [""] * 3).feature_lengths
    ]


# ------------------------------------------------------------------------- tool prompts


def test_compact_tool_prompt_keeps_signatures_and_replaces_only_the_tool_block():
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the weather forecast for a city.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "location": {"type": "string", "description": "City name"},
                        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    },
                    "required": ["location"],
                },
            },
        }
    ]
    full = tool_instruction(tools)
    compact = tool_instruction(tools, compact=True)
    assert compact == (
        'Tools:\n- get_weather(location: string, unit?: "celsius"|"fahrenheit")\n'
        'Reply with the calls as a JSON list of {"name", "arguments"}, or [].'
    )
    assert len(compact) < len(full) / 1.5
    assert compact_instruction(f"Be quick.\n{full}", tools) == f"Be quick.\n{compact}"
    assert compact_instruction("Transcribe.", None) == "Transcribe."
    ex = Example(
        id="f",
        audio_path="/x.wav",
        duration_s=1.0,
        task="fc",
        instruction=full,
        target="[]",
        tools=tools,
    )
    assert instruction(ex, "Transcribe.", "compact") == compact
    assert instruction(ex, "Transcribe.") == full


def test_plain_template_without_system_line():
    tok = _Tok()
    tok.chat_template = None
    assert build_template(tok, None).rendered.startswith("User: ")
    assert build_template(tok, "Hi.").rendered.startswith("System: Hi.\nUser: ")


def test_the_training_log_shows_the_pace_and_the_time_left():
    now = [100.0]
    pace = Pace(first_step=300, max_steps=1000, clock=lambda: now[0])
    assert pace.report(300) == "eta unknown"  # nothing done yet in this process
    now[0] += 150.0  # 25 steps in 150 s, from a resumed step 300
    assert pace.report(325) == "6.00 s/step, eta 1h 07m"  # 675 steps left
    now[0] += 4050.0  # 700 steps in 4,200 s
    assert pace.report(1000) == "6.00 s/step, eta 0.0s"
    shown = [fmt_seconds(s) for s in (None, 0.4, 42, 125, 3725)]
    assert shown == ["–", "0.4s", "42.0s", "2m 05s", "1h 02m"]
