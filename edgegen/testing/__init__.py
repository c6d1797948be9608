"""Tiny models built locally from small configs, for tests, benchmarks and the demo."""

from .tiny import make_clip_tokenizer_files, make_tiny_sd_pipeline

__all__ = ["make_clip_tokenizer_files", "make_tiny_sd_pipeline"]
