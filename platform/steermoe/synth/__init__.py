"""The offline suite factory: synthetic ASR, function-calling and audio-QA suites built from
text templates and TTS voices (``jobs/build_data.py``). Training, evaluation and Serve never
import it; they read what it wrote through :mod:`steermoe.data`."""
