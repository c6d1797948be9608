"""The torch reference samplers (they live in edgegen.converters.reference, beside calibration)."""

from edgegen.converters.reference import SCHEDULER_CLASSES, dit_sample, make_torch_scheduler, sd_pipeline

__all__ = ["SCHEDULER_CLASSES", "dit_sample", "make_torch_scheduler", "sd_pipeline"]
