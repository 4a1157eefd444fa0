"""ray_cluster.yaml passes Ray's own cluster-config validator (offline: no cloud calls) and
agrees with the full-size configs it is meant to run."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from steermoe.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "ray_cluster.yaml"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CLUSTER.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def prepared(raw) -> dict:
    """What `ray up` validates: the file merged with the provider's defaults."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def _worker_types(config: dict) -> dict[str, dict]:
    head = config["head_node_type"]
    return {k: v for k, v in config["available_node_types"].items() if k != head}


def test_validates_with_rays_validator(prepared):
    assert prepared["provider"]["type"] == "aws"


def test_validator_rejects_a_broken_copy(raw):
    """The check above has teeth: an unknown key fails the same validator."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    broken = copy.deepcopy(raw)
    broken["head_node_typo"] = "head-cpu"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


def test_head_is_cpu_only_and_workers_have_gpus(prepared):
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert head["resources"]["CPU"] >= 4  # job drivers, Tune trial drivers, MLflow
    workers = _worker_types(prepared)
    assert workers
    gpu_types = {k: v for k, v in workers.items() if v["resources"].get("GPU", 0) > 0}
    assert gpu_types, "no GPU worker node type"
    for name, node in workers.items():
        assert 0 <= node.get("min_workers", 0) <= node["max_workers"], name
    assert sum(n.get("min_workers", 0) for n in workers.values()) <= prepared["max_workers"]


def test_autoscales_from_zero(prepared):
    """GPU nodes come and go with the work: none are pinned, some may be added."""
    for name, node in _worker_types(prepared).items():
        assert node.get("min_workers", 0) == 0, name
        assert node["max_workers"] >= 1, name


@pytest.mark.parametrize("name", ["sweep_large", "train_large"])
def test_large_configs_fit_the_cluster(prepared, name):
    cfg = load_config(ROOT / "jobs" / "configs" / f"{name}.yaml")
    t = cfg.train
    assert t.use_gpu and t.num_workers == 8
    assert cfg.model.encoder == "openai/whisper-large-v3"
    assert cfg.model.llm == "Qwen/Qwen2.5-7B-Instruct"
    # One run's workers fit one node type (GPUs and CPUs).
    fits = {
        k: v
        for k, v in _worker_types(prepared).items()
        if v["resources"].get("GPU", 0) >= t.num_workers
        and v["resources"]["CPU"] >= t.num_workers * t.cpus_per_worker
    }
    assert fits, f"{name}: no node type holds {t.num_workers} GPU workers"
    cluster_gpus = sum(v["resources"]["GPU"] * v["max_workers"] for v in fits.values())
    if name == "sweep_large":
        # max_concurrent_trials = cluster GPUs // GPUs per trial.
        assert cfg.sweep.max_concurrent_trials == cluster_gpus // t.num_workers
        assert cfg.sweep.trial_cpus == 1
    # Shared storage: every node mounts it into the container.
    mount = "/mnt/shared"
    assert any(mount in opt for opt in prepared["docker"]["run_options"])
    for path in (cfg.data.root, t.storage_path, cfg.eval.output_dir):
        assert path and path.startswith(mount + "/"), path
    # MLflow comes from $MLFLOW_TRACKING_URI, which the cluster sets on every node.
    assert cfg.mlflow.tracking_uri is None


def test_project_setup_and_services(raw):
    setup = " ".join(raw["setup_commands"])
    assert "pip install" in setup and "requirements.txt" in setup and "-e ~/steermoe" in setup
    assert raw["file_mounts"]["~/steermoe"] == "."
    head_start = " ".join(raw["head_start_ray_commands"])
    assert "mlflow server" in head_start and "--host 0.0.0.0" in head_start
    assert "--backend-store-uri sqlite:///" in head_start
    assert "ray start --head" in head_start
    assert "MLFLOW_TRACKING_URI=" in head_start
    worker_start = " ".join(raw["worker_start_ray_commands"])
    assert "MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in worker_start


def test_token_auth_everywhere(raw):
    assert raw["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert "export RAY_AUTH_MODE=token" in " ".join(raw["setup_commands"])
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in raw[key] if "ray start" in c]
        assert start and all("source ~/steermoe_env.sh" in c for c in start), key


def test_image_matches_pinned_ray(raw):
    pinned = re.search(r"^ray\[[^\]]*\]==([\d.]+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert pinned
    for key in ("image", "head_image"):
        assert f":{pinned.group(1)}-" in raw["docker"][key], key


def _keys(node, depth: int):
    """Key nodes of the mapping ``node`` and, below it, of nested mappings to ``depth``."""
    if not isinstance(node, yaml.MappingNode) or depth == 0:
        return
    for key, value in node.value:
        yield key
        yield from _keys(value, depth - 1)


def test_every_key_has_a_comment():
    """STYLE.md: the cluster file says what every key it sets is for (a comment line above
    it or at the end of its line), down to the keys of each node type."""
    text = CLUSTER.read_text(encoding="utf-8")
    lines = text.splitlines()
    uncommented = []
    for key in _keys(yaml.compose(text), depth=3):
        i = key.start_mark.line
        if "#" in lines[i]:
            continue
        j = i - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        if j < 0 or not lines[j].strip().startswith("#"):
            uncommented.append(f"{i + 1}: {lines[i].strip()}")
    assert not uncommented, f"keys without a comment: {uncommented}"
