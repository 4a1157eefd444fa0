"""Shared fixtures: environment defaults, seeds and the tiny random backbones."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "platform", ROOT):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from steermoe import env  # noqa: E402

env.apply_defaults(testing=True)

# Under pytest-xdist (`pytest -n 2`, see the README) each worker keeps its Ray clusters in a
# temp folder of its own: `ray start` records the cluster it started in
# <RAY_TMPDIR>/ray/ray_current_cluster, and a bare ray.init() joins the cluster found there.
_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker and "RAY_TMPDIR" not in os.environ:
    _ray_tmp = Path(tempfile.gettempdir()) / f"ray-{_worker}"  # short: Ray's sockets live here
    _ray_tmp.mkdir(exist_ok=True)
    os.environ["RAY_TMPDIR"] = str(_ray_tmp)

# Under xdist, the longest modules (by `make test --durations`) first: xdist hands out whole
# files in collection order, so these start at once on both workers and the short ones fill
# in behind them.
LONGEST_FIRST = (
    "test_demo.py",
    "test_sweep.py",
    "test_scaleout.py",
    "test_serve_resilience.py",
    "test_model_real_backbones.py",
    "test_serve_http.py",
    "test_pyfunc.py",
    "test_zero3.py",
)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


def pytest_collection_modifyitems(config, items):
    if _worker:
        rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable within a file
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
