"""Leaderboard-rule scorers over strings and manifests. Imports nothing from ``steermoe``."""

from evaluators import asr, audio_qa, function_calling

# Task name -> scorer module (``score``, ``PRIMARY``, ``HIGHER_IS_BETTER``); short aliases too.
EVALUATORS = {
    "asr": asr,
    "audio_qa": audio_qa,
    "function_calling": function_calling,
    "aqa": audio_qa,
    "fc": function_calling,
}

__all__ = ["EVALUATORS", "asr", "audio_qa", "function_calling"]
