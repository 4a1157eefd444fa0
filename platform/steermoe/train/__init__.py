"""Distributed training: Ray Train workers running DeepSpeed engines over the trainable part."""
