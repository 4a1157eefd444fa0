"""Model core on tiny random backbones: routing, steering, masking, gradients, generation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from steermoe.config import load_config
from steermoe.model import build_model
from steermoe.model.core import IGNORE
from steermoe.model.encoder import WhisperEncoderWrapper
from steermoe.model.steering import Router, SteeringExperts, SteeringMoE, route
from steermoe.optim import build_optimizer, build_scheduler, param_groups

TINY = ["model.encoder=tiny-random-whisper", "model.llm=tiny-random-llm"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def make(cache, *overrides):
    cfg = load_config(None, [*TINY, *overrides])
    return cfg, build_model(cfg.model, cache_dir=cache)


def waves(*seconds, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(16000 * s))).astype(np.float32) for s in seconds]


# ----------------------------------------------------------------------------- routing


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_top_k_routing_matches_naive_loop(top_k):
    logits = torch.randn(2, 5, 4)
    gate = route(logits, top_k)
    for b in range(2):
        for t in range(5):
            row = logits[b, t].tolist()
            kept = sorted(range(4), key=lambda i: row[i], reverse=True)[:top_k]
            denom = sum(np.exp(row[i]) for i in kept)
            for i in range(4):
                want = np.exp(row[i]) / denom if i in kept else 0.0
                assert gate[b, t, i].item() == pytest.approx(want, abs=1e-6)


def test_dense_routing_is_softmax_and_top_k_n_is_dense():
    logits = torch.randn(3, 7, 5)
    torch.testing.assert_close(route(logits, None), torch.softmax(logits, -1))
    torch.testing.assert_close(route(logits, 5), torch.softmax(logits, -1))


def test_dense_steering_matches_explicit_loop_over_experts():
    torch.manual_seed(1)
    moe = SteeringMoE(
        router=Router(dim=8, num_layers=3, num_experts=4),
        experts=SteeringExperts(num_layers=3, num_experts=4, dim=8, init_std=0.5, init_scale=0.7),
    )
    h = torch.randn(2, 6, 8)
    for layer in range(3):
        got = moe(layer, h)
        w = moe.router.proj.weight[layer * 4 : (layer + 1) * 4]
        bias = moe.router.proj.bias[layer * 4 : (layer + 1) * 4]
        want = h.clone()
        for b in range(2):
            for t in range(6):
                p = torch.softmax(h[b, t] @ w.T + bias, -1)
                offset = sum(p[n] * moe.experts.vectors[layer, n] for n in range(4))
                want[b, t] = h[b, t] + moe.experts.scales[layer] * offset
        torch.testing.assert_close(got, want)


def test_router_only_computes_its_layer_slice():
    router = Router(dim=8, num_layers=3, num_experts=2)
    h = torch.randn(1, 4, 8)
    full = router.proj(h)  # 1, 4, 6
    torch.testing.assert_close(router(2, h), full[..., 4:6])


def test_aux_losses_and_usage_stats():
    moe = SteeringMoE(
        router=Router(dim=8, num_layers=2, num_experts=4),
        experts=SteeringExperts(num_layers=2, num_experts=4, dim=8, init_std=0.1, init_scale=0.1),
        top_k=2,
        load_balance_weight=0.5,
        z_loss_weight=0.1,
    )
    h = torch.randn(2, 6, 8)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 3:] = False
    moe(0, h, mask)
    moe(1, h, mask)
    stats = moe.routing_summary()
    for layer in range(2):
        usage = [stats[f"usage/l{layer}/e{e}"] for e in range(4)]
        assert sum(usage) == pytest.approx(1.0, abs=1e-5)
    aux = moe.aux_loss()
    lb = torch.stack(moe.stats.load_balance).mean()
    z = torch.stack(moe.stats.z_loss).mean()
    assert aux.item() == pytest.approx(0.5 * lb.item() + 0.1 * z.item(), rel=1e-5)
    assert aux.requires_grad
    # Switch load balance is >= 1 with equality at perfectly uniform routing.
    assert lb.item() >= 1.0 - 1e-5


# ----------------------------------------------------------------------------- encoder


def test_encoder_on_full_window_equals_stock_encoder(cache):
    _, model = make(cache, "model.steering.enabled=false")
    stock = model.encoder.encoder
    frames = stock.config.max_source_positions * 2
    features = torch.randn(2, stock.config.num_mel_bins, frames)
    with torch.no_grad():
        want = stock(features).last_hidden_state
        got, mask = model.encoder(features)
    assert mask.all()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_padded_batch_encodes_like_single_clips(cache):
    _, model = make(cache)
    short, long = waves(1.0, 2.5)
    with torch.no_grad():
        batch = model.collate([short, long], ["a", "b"])
        audio, mask = model.encode(batch.features, batch.feature_lengths)
        alone = model.collate([short], ["a"])
        audio1, mask1 = model.encode(alone.features, alone.feature_lengths)
    n = int(mask1[0].sum())
    assert int(mask[0].sum()) == n
    torch.testing.assert_close(audio[0, :n], audio1[0, :n], atol=1e-5, rtol=1e-4)


def test_steering_layers_out_of_range_is_a_clear_error(cache):
    with pytest.raises(ValueError, match=r"model\.steering\.layers"):
        make(cache, "model.steering.layers=[0,5]")
    with pytest.raises(ValueError, match="out of range"):
        WhisperEncoderWrapper(model_encoder(cache), steer_layers=[3])


def model_encoder(cache):
    return make(cache, "model.steering.enabled=false")[1].encoder.encoder


def test_projector_pooling_ignores_padding():
    from steermoe.model.projector import Projector

    proj = Projector(in_dim=3, out_dim=2, stride=2, pool="avg")
    x = torch.tensor([[[1.0, 1, 1], [3, 3, 3], [5, 5, 5], [100, 100, 100]]])
    mask = torch.tensor([[True, True, True, False]])
    pooled, new_mask = proj(x, mask)
    assert new_mask.tolist() == [[True, True]]
    torch.testing.assert_close(pooled[0, 1], proj.net(torch.tensor([5.0, 5, 5])))
    proj_max = Projector(in_dim=3, out_dim=2, stride=3, pool="max")
    pooled, new_mask = proj_max(x, mask)
    assert new_mask.tolist() == [[True, False]]
    torch.testing.assert_close(pooled[0, 0], proj_max.net(torch.tensor([5.0, 5, 5])))


# ---------------------------------------------------------------------- loss and grads


def test_loss_masks_everything_but_target_and_end_of_turn(cache):
    _, model = make(cache)
    batch = model.collate(waves(1.0, 1.5), ["Transcribe.", "What colour?"], ["hello world", "red"])
    out = model(batch)
    # Independent computation: full logits over the assembled sequence, CE on target only.
    audio, amask = model.encode(batch.features, batch.feature_lengths)
    embeds, labels = model._sequences(audio, amask, batch, with_target=True)
    total, count = 0.0, 0
    for e, lab in zip(embeds, labels):
        logits = model.llm(inputs_embeds=e[None]).logits[0]
        n_target = int((lab != IGNORE).sum())
        assert lab[-n_target:].tolist() == lab[lab != IGNORE].tolist()  # targets come last
        assert lab[-1].item() in model.template.end_ids
        total += F.cross_entropy(logits[-n_target - 1 : -1], lab[-n_target:], reduction="sum")
        count += n_target
    assert out["num_tokens"].item() == count
    torch.testing.assert_close(out["lm_loss"], total / count, atol=1e-5, rtol=1e-5)


def test_gradient_reaches_every_steered_layer(cache):
    _, model = make(cache, "model.steering.num_experts=3", "model.steering.top_k=2")
    model.train()
    batch = model.collate(waves(1.0, 2.0), ["a", "b"], ["one two", "three"])
    model(batch)["loss"].backward()
    vec_grad = model.steering.experts.vectors.grad
    for layer in range(model.steering.num_layers):
        assert vec_grad[layer].abs().sum() > 0, f"no gradient at steered layer {layer}"
    router_grad = model.steering.router.proj.weight.grad
    assert router_grad.abs().sum() > 0
    assert model.steering.experts.scales.grad.abs().min() > 0
    for _, p in model.encoder.named_parameters():
        assert p.grad is None


def test_frozen_parameters_bit_identical_after_step_and_trainable_move(cache):
    cfg, model = make(cache)
    frozen = {
        n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("trainable.")
    }
    before = {n: p.detach().clone() for n, p in model.trainable_parameters()}
    opt = build_optimizer(model, cfg.train.optim)
    model.train()
    batch = model.collate(waves(1.0, 1.2), ["a", "b"], ["yes", "no"])
    model(batch)["loss"].backward()
    opt.step()
    for n, p in model.named_parameters():
        if n in frozen:
            assert not p.requires_grad
            assert torch.equal(p, frozen[n]), n
    for n, p in model.trainable_parameters():
        assert not torch.equal(p, before[n]), n


def test_optimizer_groups_hold_exactly_the_trainable_parameters(cache):
    cfg, model = make(cache, "train.optim.lr_router=0.005")
    groups = {g["name"]: g for g in param_groups(model, cfg.train.optim)}
    assert {k: g["lr"] for k, g in groups.items()} == {
        "steering": 1e-2,
        "router": 5e-3,
        "projector": 1e-4,
    }
    in_groups = {id(p) for g in groups.values() for p in g["params"]}
    assert in_groups == {id(p) for _, p in model.trainable_parameters()}
    assert len(in_groups) == len(list(model.trainable_parameters()))
    frozen = {id(p) for n, p in model.named_parameters() if not n.startswith("trainable.")}
    assert not in_groups & frozen
    sched = build_scheduler(build_optimizer(model, cfg.train.optim), cfg.train.optim, 100)
    assert sched.get_last_lr()[0] == pytest.approx(1e-2 / cfg.train.optim.warmup_steps)


@pytest.mark.parametrize(
    ("overrides", "has_steering", "kind"),
    [
        (["model.steering.enabled=false"], False, "linear"),
        (["model.steering.enabled=false", "model.projector.kind=mlp"], False, "mlp"),
        (["model.steering.enabled=false", "model.projector.kind=linear_mlp"], False, "linear_mlp"),
        (["model.steering.num_experts=1"], True, "linear"),
    ],
)
def test_baselines_in_the_same_model_class(cache, overrides, has_steering, kind):
    cfg, model = make(cache, *overrides)
    assert (model.steering is not None) == has_steering
    assert model.trainable.projector.kind == kind
    names = [n for n, _ in model.trainable_parameters()]
    assert all(n.startswith("projector.") for n in names) != has_steering
    groups = param_groups(model, cfg.train.optim)
    assert {g["name"] for g in groups} == (
        {"steering", "router", "projector"} if has_steering else {"projector"}
    )
    batch = model.collate(waves(1.0), ["a"], ["b"])
    assert torch.isfinite(model(batch)["loss"])


# -------------------------------------------------------------------------- generation


def test_batched_generation_equals_per_example(cache):
    _, model = make(cache, "model.steering.num_experts=2")
    # Give the random projector a real signal so outputs differ between clips.
    with torch.no_grad():
        model.trainable.projector.net.weight.mul_(50)
    model.eval()
    audios = waves(0.6, 2.2, 1.4, seed=3)
    prompts = ["Transcribe the audio.", "What?", "Call the tool."]
    batched = model.generate(model.collate(audios, prompts), max_new_tokens=12)
    for i, (a, p) in enumerate(zip(audios, prompts)):
        single = model.generate(model.collate([a], [p]), max_new_tokens=12)
        assert single.token_ids[0] == batched.token_ids[i]
        assert single.texts[0] == batched.texts[i]
    assert all(0 < n <= 12 for n in batched.num_tokens)
    again = model.generate(model.collate(audios, prompts), max_new_tokens=12)
    assert again.token_ids == batched.token_ids


def test_generation_stops_at_end_of_turn(cache):
    _, model = make(cache)
    eot = model.template.end_ids[0]
    with torch.no_grad():
        head = model.llm.get_output_embeddings()
        # Make end-of-turn overwhelmingly likely: every example stops at step 0.
        bias = torch.zeros(head.weight.shape[0])
        bias[eot] = 1e4
        head.bias = torch.nn.Parameter(bias, requires_grad=False)
    try:
        out = model.generate(model.collate(waves(1.0, 1.0), ["a", "b"]), max_new_tokens=5)
    finally:
        head.bias = None
    assert out.token_ids == [[], []]
    assert out.texts == ["", ""]


def test_repetition_guard_trims_loops():
    from steermoe.model.core import _trim_repeats

    ids = [5, 6, 7, 1, 2, 1, 2, 1, 2, 1, 2]
    assert _trim_repeats(ids, 4) is True
    assert ids == [5, 6, 7, 1, 2]
    ids = [9, 9, 9, 9]
    assert _trim_repeats(ids, 4) and ids == [9]
    ids = [1, 2, 3, 1, 2, 3]
    assert _trim_repeats(ids, 4) is False and ids == [1, 2, 3, 1, 2, 3]
    # A looping sentence of ten tokens ("The 1990s.\n\n" in SmolLM2's vocabulary).
    sentence = [504, 216, 33, 41, 41, 32, 87, 30, 198, 198]
    ids = [2, 3, *sentence * 4]
    assert _trim_repeats(ids, 4) and ids == [2, 3, *sentence]
    ids = [*sentence * 3, *sentence[:9]]
    assert _trim_repeats(ids, 4) is False


def test_validation_slice_takes_tasks_in_turn():
    from steermoe.data.examples import Example
    from steermoe.train.loop import validation_slice

    def ex(i, task):
        return Example(f"{task}-{i}", "/x.wav", 1.0, task, "", "t")

    examples = [ex(i, t) for t in ("asr", "aqa", "fc") for i in range(5)]
    picked = validation_slice(examples, 7)
    assert [e.id for e in picked] == [
        "aqa-0",
        "asr-0",
        "fc-0",
        "aqa-1",
        "asr-1",
        "fc-1",
        "aqa-2",
    ]
    assert validation_slice(examples[:2], 10) == sorted(examples[:2], key=lambda e: e.id)


def test_bf16_backbones_with_fp32_trainable_part(cache):
    _, model = make(cache, "model.dtype=bfloat16", "model.steering.top_k=2")
    assert next(model.llm.parameters()).dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for _, p in model.trainable_parameters())
    batch = model.collate(waves(1.0, 1.5), ["a", "b"], ["yes", "no"])
    out = model(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert model.steering.experts.vectors.grad is not None
    gen = model.generate(model.collate(waves(1.0), ["a"]), max_new_tokens=3)
    assert len(gen.token_ids) == 1


def test_bf16_on_a_cpu_without_native_bf16_warns_and_auto_stays_fp32(monkeypatch, caplog):
    from steermoe.model import build as model_build

    assert model_build.torch_dtype("auto", "cpu") == torch.float32
    monkeypatch.setattr(model_build, "cpu_has_bf16", lambda: False)
    with caplog.at_level("WARNING", logger="steermoe.model.build"):
        assert model_build.torch_dtype("bfloat16", "cpu") == torch.bfloat16
    assert "80x slower" in caplog.text and "model.dtype=auto" in caplog.text
    caplog.clear()
    monkeypatch.setattr(model_build, "cpu_has_bf16", lambda: True)
    with caplog.at_level("WARNING", logger="steermoe.model.build"):
        model_build.torch_dtype("bfloat16", "cpu")
        model_build.torch_dtype("float32", "cpu")
    assert not caplog.text
