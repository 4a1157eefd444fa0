"""Data as training, evaluation and Serve read it: the example/manifest format, audio checks,
source loaders, held-out sets, length-bucketed sampling and batches (:mod:`.batches`).
``datasets`` loads lazily. The synthetic suites are built offline by :mod:`steermoe.synth`."""

from steermoe.data.audio import SAMPLE_RATE, AudioError, load_audio
from steermoe.data.examples import Example, ManifestError, read_manifest, write_manifest
from steermoe.data.heldout import DatasetUnavailable, fsdd_accuracy, named_dataset
from steermoe.data.sampler import LengthBucketSampler
from steermoe.data.sources import DataError, LoadReport, load_examples
from steermoe.data.tools import calls_to_text, render_tools

__all__ = [
    "SAMPLE_RATE",
    "AudioError",
    "DataError",
    "DatasetUnavailable",
    "Example",
    "LengthBucketSampler",
    "LoadReport",
    "ManifestError",
    "calls_to_text",
    "fsdd_accuracy",
    "load_audio",
    "load_examples",
    "named_dataset",
    "read_manifest",
    "render_tools",
    "write_manifest",
]
