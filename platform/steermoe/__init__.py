"""SteerMoE: align a frozen Whisper encoder with a frozen LLM through a small steering MoE.

The platform around the method: Ray Train + DeepSpeed training, Ray Tune sweeps, evaluators,
MLflow tracking and a Ray Serve API. Import it as ``steermoe`` (``platform/`` is a source root).
"""

__version__ = "0.1.0"
