"""Typed arguments of the Serve application (what ``build_app`` takes)."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from steermoe.config import Config, ServeConfig


class ServeArgs(BaseModel):
    """Everything a replica needs; built on the driver, passed to every replica as a dict.

    The API key itself never travels: the driver reads it from ``api_key_env`` and only its
    SHA-256 goes into the (cluster-visible) deployment arguments.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # `models:/<name>@<alias>`, `models:/<name>/<version>`, `embedded:reference` or a folder.
    model: str = Field(min_length=1)
    # Name clients pass as `model`; any other name gets 404 model_not_found.
    served_name: str = Field(default="steermoe", min_length=1)
    # MLflow tracking/registry URI for `models:/` references (null = env or ./mlflow.db).
    tracking_uri: str | None = None
    # Backbone cache on the replicas' nodes (null = $STEERMOE_CACHE or ~/.cache/steermoe).
    cache_dir: str | None = None
    # Deployment name inside the Serve application.
    deployment_name: str = Field(default="SteerMoE", min_length=1)
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=1, ge=1)
    target_ongoing_requests: float = Field(default=4.0, gt=0)
    # Requests a replica accepts at once (null = 4 x max_batch_size, at least 16).
    max_ongoing_requests: int | None = Field(default=None, ge=1)
    cpus_per_replica: float = Field(default=1.0, gt=0)
    gpus_per_replica: float = Field(default=0.0, ge=0)
    max_batch_size: int = Field(default=8, ge=1)
    batch_wait_timeout_s: float = Field(default=0.05, ge=0)
    # Variable holding the bearer API key; `build_app` reads it on the driver.
    api_key_env: str = "STEERMOE_API_KEY"
    # SHA-256 (hex) of the bearer API key; null = take `api_key_env` (unset = no auth).
    api_key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    max_body_mb: float = Field(default=25.0, gt=0)
    max_audio_s: float = Field(default=30.0, gt=0)
    max_tokens: int = Field(default=256, ge=1)

    @model_validator(mode="after")
    def _check(self) -> ServeArgs:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must be <= max_replicas")
        return self

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
        values = serve_cfg.model_dump()
        for key in ("host", "port"):
            values.pop(key)
        values["tracking_uri"] = tracking_uri
        values.update(changes)
        return cls(**values)


def with_key_digest(args: ServeArgs) -> ServeArgs:
    """``args`` with the digest of the key in ``$<api_key_env>`` filled in (if set)."""
    key = os.environ.get(args.api_key_env)
    if args.api_key_sha256 is not None or not key:
        return args
    return args.model_copy(update={"api_key_sha256": key_digest(key)})


def key_digest(key: str | None) -> str | None:
    """SHA-256 hex digest of an API key (``None`` stays ``None``)."""
    return hashlib.sha256(key.encode()).hexdigest() if key else None
