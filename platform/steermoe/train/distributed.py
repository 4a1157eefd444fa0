"""DeepSpeed set-up for one Ray Train worker (or a plain process)."""

from __future__ import annotations

import importlib
import os
import socket

import torch

from steermoe.config import Config


def ds_config(config: Config, *, bf16: bool) -> dict:
    """DeepSpeed config: ZeRO stage, micro-batch, accumulation, clipping, precision.

    The optimizer is a client ``torch.optim.AdamW`` (our three groups), so DeepSpeed never
    JIT-compiles FusedAdam/CPUAdam. ``gradient_clipping`` is applied by the engine to the
    unscaled gradients before every optimizer step.
    """
    t = config.train
    extra = {}
    if bf16 and config.model.encoder_dtype == "float32":
        # DeepSpeed casts the whole module to bf16; the encoder (and its steered residual
        # stream) stays fp32 as configured.
        extra["data_types"] = {"keep_in_fp32_modules": [r"^encoder\."]}
    return {
        **extra,
        "train_micro_batch_size_per_gpu": t.batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "gradient_clipping": t.optim.grad_clip or 0.0,
        "zero_optimization": {"stage": t.zero_stage},
        "bf16": {"enabled": bf16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def skip_cpu_shm_build() -> None:
    """Skip DeepSpeed's 35-50 s JIT build of its CPU shared-memory comm op (gloo suffices).

    ``import deepspeed.comm.torch as m`` would bind the ``deepspeed.comm.torch`` *attribute*;
    the module object is fetched with importlib.
    """
    module = importlib.import_module("deepspeed.comm.torch")
    module.build_shm_op = lambda: None


def ensure_process_group_env() -> None:
    """Without Ray Train/torchrun (in-process runs) DeepSpeed needs RANK etc. or tries MPI."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(
        {
            "RANK": "0",
            "LOCAL_RANK": "0",
            "WORLD_SIZE": "1",
            "LOCAL_WORLD_SIZE": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )


def init(config: Config, model, optimizer, scheduler, device: torch.device):
    """``deepspeed.initialize`` over the whole model, the trainable parameters in the optimizer.

    The engine wraps the whole model (backbones included): ZeRO-3 partitions every parameter
    it holds, frozen ones too, so each of N ranks keeps about 1/N of the backbones (parameters
    under ``stage3_param_persistence_threshold`` elements stay whole). Frozen weights read
    outside their own module's ``forward`` (the embedding table in the CTC loss, Whisper's
    sliced positions) are gathered on access by DeepSpeed's parameter getter. ZeRO-1/2
    partition only optimizer state and gradients, i.e. only the trainable part.
    """
    import deepspeed

    if device.type == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        skip_cpu_shm_build()
    ensure_process_group_env()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
    bf16 = next(model.llm.parameters()).dtype == torch.bfloat16
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=ds_config(config, bf16=bf16),
    )
    return engine, optimizer, scheduler


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def all_mean(values: list[float], weight: float) -> list[float]:
    """Weighted mean over ranks of several numbers (weight = examples or tokens on this rank)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    t = torch.tensor([*(v * weight for v in values), weight], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    total = float(t[-1]) or 1.0
    return [float(x) / total for x in t[:-1]]


def all_gather(obj):
    """Every rank's ``obj`` in rank order."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [obj]
    out = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out
