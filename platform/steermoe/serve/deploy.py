"""Deploy the application on a Ray cluster (an existing one, or a local one on 127.0.0.1)."""

from __future__ import annotations

import os
from pathlib import Path

from steermoe import env
from steermoe.config import Config
from steermoe.serve.args import ServeArgs

APP_NAME = "steermoe"


def connect_ray(*, num_cpus: int | None = None) -> bool:
    """Join the cluster at ``$RAY_ADDRESS`` or start a local one on 127.0.0.1.

    Returns:
        True when this process started (and so owns) a local cluster.
    """
    import ray

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address="auto")
        return False
    # env.apply_defaults() sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: a local node stays on
    # 127.0.0.1 (dashboard included), and Ray's token authentication stays on. "local": a
    # cluster of its own, not one `ray start` recorded on the machine.
    env.ensure_ray_token()
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False)
    return True


def deploy(
    config: Config,
    *,
    tracking_uri: str | None = None,
    app_name: str = APP_NAME,
    route_prefix: str = "/",
    **changes,
) -> str:
    """Start Serve's HTTP proxy on ``serve.host:serve.port`` and run the application.

    Args:
        config: the validated config (``serve`` and ``mlflow`` sections are used).
        tracking_uri: MLflow URI for ``models:/`` references (default: from the config).
        app_name: Serve application name (several can share one Serve instance).
        route_prefix: URL prefix of the application.
        **changes: :class:`ServeArgs` fields to override (e.g. ``max_batch_size=1``).

    Returns:
        The application's base URL.
    """
    from ray import serve

    from steermoe.serve.app import build_app

    cfg = config.serve
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    args = ServeArgs.from_config(config, tracking_uri=tracking_uri, **changes)
    serve.run(build_app(args), name=app_name, route_prefix=route_prefix)
    prefix = "" if route_prefix == "/" else route_prefix
    return f"http://{cfg.host}:{cfg.port}{prefix}"


def usage(url: str, config: Config, clip: str | Path = "clip.wav") -> str:
    """Copy-paste examples (curl and the ``openai`` client) for the deployed endpoint."""
    cfg = config.serve
    key = f"${cfg.api_key_env}" if os.environ.get(cfg.api_key_env) else "unused"
    auth = f' -H "Authorization: Bearer {key}"' if key != "unused" else ""
    return f"""\
Serving {cfg.served_name!r} at {url}  (OpenAI-compatible; Prometheus metrics on Ray's metrics port)

  curl {url}/health
  curl{auth} {url}/v1/audio/transcriptions -F model={cfg.served_name} -F file=@{clip}

  from openai import OpenAI
  client = OpenAI(base_url="{url}/v1", api_key="{key}")
  client.audio.transcriptions.create(model="{cfg.served_name}", file=open("{clip}", "rb"))
  client.chat.completions.create(model="{cfg.served_name}", messages=[{{"role": "user", "content": [
      {{"type": "input_audio", "input_audio": {{"data": <base64 wav>, "format": "wav"}}}}]}}])
"""
