"""Per-user state a fresh machine lacks: the Ray token is created privately, once."""

from __future__ import annotations

from pathlib import Path

import pytest

from steermoe import env


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(key, raising=False)
    env._TOKEN_REPORTED.clear()
    return tmp_path


def test_missing_token_is_created_private_and_never_printed(home, capsys):
    path = env.ensure_ray_token()
    assert path == home / ".ray" / "auth_token"
    token = path.read_text()
    assert len(token) == 64 and int(token, 16) >= 0
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    out = capsys.readouterr().out
    assert f"created a new token in {path}" in out and token not in out
    # Again: the same token is kept, and nothing more is said.
    assert env.ensure_ray_token() == path and path.read_text() == token
    assert capsys.readouterr().out == ""


def test_existing_token_is_used_and_other_locations_respected(home, monkeypatch, capsys):
    other = home / "elsewhere" / "tok"
    other.parent.mkdir()
    other.write_text("abc")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(other))
    assert env.ensure_ray_token() == other and other.read_text() == "abc"
    assert "using the token in" in capsys.readouterr().out
    assert not (home / ".ray").exists()
    monkeypatch.setenv("RAY_AUTH_TOKEN", "in-the-environment")
    assert env.ensure_ray_token() is None
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    assert env.ensure_ray_token() is None and not (home / ".ray").exists()


def test_a_local_cluster_avoids_a_held_dashboard_port_and_tells_its_helpers(home, monkeypatch):
    import socket

    from steermoe.train.run import local_ray_kwargs

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with socket.socket() as held:
        held.bind(("127.0.0.1", env.free_port(8265)))
        held.listen()
        taken = held.getsockname()[1]
        kwargs = local_ray_kwargs()
        port = kwargs["dashboard_port"]
        assert port != taken and env.free_port(port) == port  # 8265 itself where CI holds it
    assert kwargs["dashboard_host"] == "127.0.0.1"
    url = kwargs["runtime_env"]["env_vars"]["RAY_API_SERVER_ADDRESS"]
    assert url == f"http://127.0.0.1:{port}"
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert local_ray_kwargs() == {"address": "127.0.0.1:6379"}


def _record_a_cluster(monkeypatch, tmp_path, address_env: str | None) -> None:
    """$RAY_ADDRESS unset or empty, and a cluster recorded as `ray start --head` (the demo's,
    say) leaves it for a bare ray.init() to join."""
    if address_env is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", address_env)  # Ray reads "" as unset too
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:6390")


@pytest.mark.parametrize("address_env", [None, ""])
def test_a_local_cluster_is_its_own_not_the_one_ray_start_recorded(
    home, monkeypatch, tmp_path, address_env
):
    from ray._private import services

    from steermoe.train.run import local_ray_kwargs

    _record_a_cluster(monkeypatch, tmp_path, address_env)
    assert services.canonicalize_bootstrap_address(None, str(tmp_path / "ray")) == "127.0.0.1:6390"
    address = local_ray_kwargs()["address"]
    # Ray's own resolver: None means "start a new local cluster".
    assert services.canonicalize_bootstrap_address(address, str(tmp_path / "ray")) is None


@pytest.mark.parametrize("address_env", [None, ""])
def test_serves_local_cluster_is_its_own_too(home, monkeypatch, tmp_path, address_env):
    import ray
    from ray._private import services

    from steermoe.serve.deploy import connect_ray

    _record_a_cluster(monkeypatch, tmp_path, address_env)
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    assert connect_ray(num_cpus=2) is True  # it started the cluster, so it owns it
    ((kwargs,),) = [calls]
    assert kwargs["num_cpus"] == 2
    assert services.canonicalize_bootstrap_address(kwargs["address"], str(tmp_path / "ray")) is None
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6390")
    assert connect_ray() is False and calls[-1] == {"address": "auto"}


def test_ray_temp_dir_follows_ray_tmpdir_then_tmpdir(monkeypatch, tmp_path):
    import ray._common.utils as ray_utils

    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    monkeypatch.delenv("TMPDIR", raising=False)
    assert env.ray_temp_dir() == Path("/tmp/ray")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "t"))
    assert env.ray_temp_dir() == tmp_path / "t" / "ray"
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "r"))
    assert env.ray_temp_dir() == tmp_path / "r" / "ray"
    # The same folder Ray itself records its clusters and session logs in.
    assert env.ray_temp_dir() == Path(ray_utils.get_default_ray_temp_dir())


def test_a_local_cluster_that_times_out_on_start_is_cleaned_up_and_tried_again(
    home, monkeypatch, capsys
):
    import subprocess
    import time

    import ray

    from steermoe.train import run

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    bystander = subprocess.Popen(["sleep", "60"])  # this process's, from before the start
    time.sleep(2.5)  # process start times are known to about a second
    spawned, calls = [], []

    def init(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:  # what a node that missed Ray's 30 s leaves behind
            spawned.append(subprocess.Popen(["sleep", "60"]))
            raise Exception("The current node timed out during startup. This could happen ...")

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    try:
        run.start_local_ray()
        assert len(calls) == 2 and calls[1]["dashboard_host"] == "127.0.0.1"
        assert spawned[0].wait(timeout=10) is not None  # ended before the second try
        assert bystander.poll() is None  # older children are not the failed start's
        assert "trying again (2/3)" in capsys.readouterr().out
    finally:
        bystander.kill()
        bystander.wait()

    def broken(**kwargs):
        calls.append(kwargs)
        raise ValueError("address 127.0.0.1:1 is not a Ray cluster")

    calls.clear()
    monkeypatch.setattr(ray, "init", broken)
    with pytest.raises(ValueError, match="not a Ray cluster"):
        run.start_local_ray()
    assert len(calls) == 1  # only the start-up timeout is retried
