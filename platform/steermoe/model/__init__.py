"""Model core: encoder wrapper, steering MoE, projector, prompts, generation, checkpoints."""

from steermoe.model.build import build_model
from steermoe.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from steermoe.model.core import Batch, Generation, SteerMoEModel

__all__ = [
    "Batch",
    "CheckpointError",
    "Generation",
    "SteerMoEModel",
    "build_model",
    "load_checkpoint",
    "save_checkpoint",
]
