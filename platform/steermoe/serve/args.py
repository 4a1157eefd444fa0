"""Typed arguments of the Serve application (what ``build_app`` takes)."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from pydantic import Field

from steermoe.config import Config, ServeConfig


class ServeArgs(ServeConfig):
    """Everything a replica needs: the ``serve`` section plus what the driver resolves; built
    on the driver, passed to every replica as a dict.

    The API key itself never travels: the driver reads it from ``api_key_env`` and only its
    SHA-256 goes into the (cluster-visible) deployment arguments.
    """

    # MLflow tracking/registry URI for `models:/` references (null = env or ./mlflow.db).
    tracking_uri: str | None = None
    # Backbone cache on the replicas' nodes (null = $STEERMOE_CACHE or ~/.cache/steermoe).
    cache_dir: str | None = None
    # Name of the model deployment inside the Serve application (its HTTP ingress is
    # `<deployment_name>Ingress`).
    deployment_name: str = Field(default="SteerMoE", min_length=1)
    # Requests a model replica accepts at once (null = 4 x max_batch_size, at least 16).
    max_ongoing_requests: int | None = Field(default=None, ge=1)
    # SHA-256 (hex) of the bearer API key; null = take `api_key_env` (unset = no auth).
    api_key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @property
    def device(self) -> str:
        """``cuda`` when the replica reserves a GPU, else ``cpu``."""
        return "cuda" if self.gpus_per_replica > 0 else "cpu"

    @property
    def ongoing_limit(self) -> int:
        """Effective ``max_ongoing_requests`` (enough queued work to fill batches)."""
        return self.max_ongoing_requests or max(16, 4 * self.max_batch_size)

    @classmethod
    def from_config(
        cls, config: Config | ServeConfig, *, tracking_uri: str | None = None, **changes: Any
    ) -> ServeArgs:
        """Arguments from the ``serve`` section (and ``mlflow`` section) of a config.

        The API key is read by :func:`build_app`, on the driver, from ``serve.api_key_env``.
        """
        serve_cfg = config.serve if isinstance(config, Config) else config
        if isinstance(config, Config) and tracking_uri is None:
            tracking_uri = config.mlflow.tracking_uri
        return cls(**{**serve_cfg.model_dump(), "tracking_uri": tracking_uri, **changes})


def with_key_digest(args: ServeArgs) -> ServeArgs:
    """``args`` with the digest of the key in ``$<api_key_env>`` filled in (if set)."""
    key = os.environ.get(args.api_key_env)
    if args.api_key_sha256 is not None or not key:
        return args
    return args.model_copy(update={"api_key_sha256": key_digest(key)})


def key_digest(key: str | None) -> str | None:
    """SHA-256 hex digest of an API key (``None`` stays ``None``)."""
    return hashlib.sha256(key.encode()).hexdigest() if key else None
