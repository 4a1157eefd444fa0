"""The strict config tree: unknown keys, wrong types and impossible values name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from steermoe.config import Config, ConfigError, flatten, load_config, to_dict
from steermoe.synth.build_config import load_build_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "jobs" / "configs").glob("*.yaml"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.steering.top_k=8"], r"model\.steering\.top_k: must be <= num_experts \(4\)"),
        (["model.steering.nope=1"], r"model\.steering\.nope: unknown key"),
        (["nope.x=1"], r"nope: unknown key"),
        (["train.optim.lr_router=-1"], r"train\.optim\.lr_router: .*greater than 0"),
        (["train.optim.lr_steering=0"], r"train\.optim\.lr_steering"),
        (["train.batch_size=abc"], r"train\.batch_size: .*valid integer"),
        (["train.batch_size=1.5"], r"train\.batch_size"),
        (["train.zero_stage=4"], r"train\.zero_stage"),
        (["model.projector.kind=conv"], r"model\.projector\.kind"),
        (["model.steering.num_experts=0"], r"model\.steering\.num_experts"),
        (["model.steering.layers=[1,1]"], r"model\.steering\.layers: has duplicates"),
        (["data.min_audio_s=40", "data.max_audio_s=30"], r"data\.min_audio_s"),
        (["data.max_audio_s=31"], r"data\.max_audio_s"),
        (["serve.min_replicas=3", "serve.max_replicas=2"], r"serve\.min_replicas"),
        (["train.optim.betas=[0.9,1.5]"], r"train\.optim\.betas"),
        (["sweep.space={'data.root': [1]}"], r"sweep\.space\.data\.root: must name"),
        (["train.name=has space"], r"train\.name"),
        (["train.optim.grad_clip=-1"], r"train\.optim\.grad_clip"),
    ],
)
def test_bad_values_fail_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_several_errors_are_all_reported():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["train.batch_size=0", "model.typo=1"])
    text = str(info.value)
    assert "train.batch_size" in text and "model.typo" in text


def test_overrides_apply_and_parse_yaml_values():
    cfg = load_config(
        None,
        [
            "model.steering.num_experts=8",
            "model.steering.top_k=2",
            "model.steering.layers=[0, 2]",
            "train.optim.lr_router=3e-4",
            "model.steering.enabled=false",
        ],
    )
    assert cfg.model.steering.num_experts == 8
    assert cfg.model.steering.top_k == 2
    assert cfg.model.steering.layers == (0, 2)
    assert cfg.train.optim.lr_router == pytest.approx(3e-4)
    assert cfg.model.steering.enabled is False


def test_defaults_follow_the_paper():
    cfg = Config()
    assert (
        cfg.train.optim.lr_steering,
        cfg.train.optim.lr_router,
        cfg.train.optim.lr_projector,
    ) == (
        1e-2,
        1e-3,
        1e-4,
    )
    assert cfg.model.steering.top_k is None  # dense softmax
    assert cfg.model.steering.init_std == 0.01 and cfg.model.steering.init_scale == 0.1
    assert cfg.model.projector.stride == 4 and cfg.model.projector.pool == "avg"
    assert cfg.serve.host == "127.0.0.1"
    assert cfg.train.zero_stage == 2


def test_config_is_frozen_and_round_trips():
    cfg = load_config(None, ["model.steering.top_k=2"])
    with pytest.raises(Exception, match="frozen"):
        cfg.model.steering.top_k = 3  # type: ignore[misc]
    again = Config.model_validate(to_dict(cfg))
    assert again == cfg
    flat = flatten(to_dict(cfg))
    assert flat["model.steering.top_k"] == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: [1, 2]\n", r"model: .*valid dictionary"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("model: {steering: {top_k: 9, num_experts: 2}}\n", r"model\.steering\.top_k"),
        ("key: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_files_fail_before_any_work(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_file_and_bad_override_syntax(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"expected key\.sub=value"):
        load_config(None, ["model.steering.top_k"])
    with pytest.raises(ConfigError, match="is a value"):
        load_config(None, ["model.encoder=whisper-base", "model.encoder.x=1"])


def test_a_file_holds_only_its_differences_from_its_base(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "root.yaml").write_text(
        "model: {steering: {num_experts: 8, top_k: 2}, num_threads: 2}\n"
        "train:\n  max_steps: 40\n  optim: {lr_steering: 5.0e-3, warmup_steps: 7}\n"
        "  curriculum:\n    - {steps: 10, tasks: [asr]}\n    - {tasks: [asr, aqa, fc]}\n"
    )
    (tmp_path / "runs" / "middle.yaml").write_text(
        "base: ../root.yaml\nmodel: {steering: {top_k: null}}\ntrain: {optim: {warmup_steps: 3}}\n"
    )
    (tmp_path / "runs" / "leaf.yaml").write_text(
        "base: middle.yaml\ntrain: {max_steps: 90, curriculum: []}\n"
    )
    middle = load_config(tmp_path / "runs" / "middle.yaml")
    leaf = load_config(tmp_path / "runs" / "leaf.yaml", ["train.optim.lr_router=2.0e-4"])
    # Mappings merge key by key through the chain ...
    assert middle.model.steering.num_experts == leaf.model.steering.num_experts == 8
    assert middle.model.steering.top_k is None and leaf.model.num_threads == 2
    assert (leaf.train.optim.lr_steering, leaf.train.optim.warmup_steps) == (5.0e-3, 3)
    assert leaf.train.optim.lr_router == 2.0e-4 and leaf.train.max_steps == 90
    # ... and any other value replaces the base's: a list is not appended to.
    assert len(middle.train.curriculum) == 2 and leaf.train.curriculum == ()


def test_a_bad_base_fails_naming_the_files(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"chain returns to a file already in it: .*a\.yaml -> "):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: base: file not found: .*nowhere\.yaml"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("base: [a.yaml]\n")
    with pytest.raises(ConfigError, match=r"d\.yaml: base: must name a YAML file"):
        load_config(tmp_path / "d.yaml")
    (tmp_path / "f.yaml").write_text("train: {max_steps: 5}\n")
    (tmp_path / "e.yaml").write_text("base: f.yaml\nmodel: {steering: {nope: 1}}\n")
    with pytest.raises(ConfigError, match=r"model\.steering\.nope: unknown key"):
        load_config(tmp_path / "e.yaml")


def test_the_reference_chain_resolves_to_each_runs_recipe():
    configs = CONFIGS[0].parent
    g = load_config(configs / "reference_g.yaml")
    f = load_config(configs / "reference_f.yaml")
    assert (g.train.name, g.train.init_from, g.data.root) == (
        "reference-g",
        "embedded:reference-f",
        "reference-k",
    )
    # Inherited through five files: reference-b's z-loss and reference-d's channel augmentation.
    assert g.model.steering.z_loss_weight == 1.0e-3 and g.data.augment.reverb_prob == 0.3
    assert g.train.curriculum == () and [s.tasks for s in f.train.curriculum] == [
        ("asr",),
        ("asr", "aqa", "fc"),
    ]
    assert (g.train.optim.warmup_steps, g.train.optim.lr_steering) == (20, 1.5e-3)


def test_a_data_build_config_builds_on_its_base_too(tmp_path):
    configs = CONFIGS[0].parent
    plain = load_build_config(configs / "data_reference.yaml")
    kokoro = load_build_config(configs / "data_reference_k.yaml")
    assert (kokoro.name, kokoro.engines.kokoro) == ("reference-k", 0.5)
    # Everything it does not name is its base's: the same texts and held-out voices.
    assert kokoro.model_dump(exclude={"name", "engines"}) == plain.model_dump(
        exclude={"name", "engines"}
    )
    (tmp_path / "child.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"child\.yaml: base: file not found: .*nowhere"):
        load_build_config(tmp_path / "child.yaml")


def _validate_any(path: Path) -> None:
    if path.name.startswith("data_"):
        load_build_config(path)
    else:
        load_config(path)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_validates(path):
    _validate_any(path)


def test_there_are_shipped_configs():
    names = {p.name for p in CONFIGS}
    assert {"train_tiny.yaml", "reference.yaml"} <= names


def test_sweep_mode_follows_the_metrics_scorer_and_a_contradiction_names_the_key():
    assert load_config(None, ["sweep.metric=val_fc_accuracy"]).sweep.mode == "max"
    assert load_config(None, ["sweep.metric=val_wer"]).sweep.mode == "min"
    assert load_config(None, ["sweep.metric=val_loss"]).sweep.mode == "min"  # no scorer: min
    assert load_config(None, ["sweep.metric=val_loss", "sweep.mode=max"]).sweep.mode == "max"
    with pytest.raises(ConfigError, match=r"sweep\.mode.*contradicts metric 'val_wer'"):
        load_config(None, ["sweep.mode=max"])
    promote = ["eval.datasets=[librivox]", "sweep.promote_metric=librivox.wer"]
    assert load_config(None, promote).sweep.promote_mode == "min"
    with pytest.raises(ConfigError, match=r"sweep\.promote_mode.*better when lower"):
        load_config(None, [*promote, "sweep.promote_mode=max"])


@pytest.mark.parametrize(
    "overrides",
    [
        ["eval.datasets=[fsdd]", "sweep.promote_metric=librivox.wer"],
        ["eval.datasets=[librivox]", "sweep.promote_metric=wer"],
        ["sweep.evaluate_best=false", "sweep.promote_metric=librivox.wer"],
    ],
)
def test_a_promote_metric_the_evaluation_cannot_produce_fails_at_config_time(overrides):
    with pytest.raises(ConfigError, match=r"sweep\.promote_metric"):
        load_config(None, overrides)
