"""Shared fixtures: environment defaults, seeds and the tiny random backbones."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "platform", ROOT):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from steermoe import env  # noqa: E402

env.apply_defaults(testing=True)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    if not torch.cuda.is_available():
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def loud_tiny_model(tmp_path_factory):
    """The tiny random backbones in eval mode, with the projector scaled up so that the clips
    are a real signal to the LLM (different clips, different answers)."""
    from steermoe.config import ModelConfig
    from steermoe.model import build_model

    config = ModelConfig(encoder="tiny-random-whisper", llm="tiny-random-llm")
    model = build_model(config, cache_dir=tmp_path_factory.mktemp("cache"))
    with torch.no_grad():
        model.trainable.projector.net.weight.mul_(50)
    return model.eval()
