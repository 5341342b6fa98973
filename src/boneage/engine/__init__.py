"""The shared training loop."""

from boneage.engine.optim import make_optimizer, make_scheduler
from boneage.engine.tasks import TASKS, Task
from boneage.engine.trainer import FitResult, fit, resolve_device

__all__ = ["fit", "FitResult", "make_optimizer", "make_scheduler", "resolve_device", "Task", "TASKS"]
