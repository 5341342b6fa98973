"""The shared training loop."""

from boneage.engine.trainer import FitResult, fit, make_optimizer, make_scheduler, resolve_device

__all__ = ["fit", "FitResult", "make_optimizer", "make_scheduler", "resolve_device"]
