"""xbar-sweep engine: non-ideal ReRAM crossbar inference in pure PyTorch (knows nothing of Ray)."""

from .convert import CrossbarModel, convert
from .evaluate import Metrics, evaluate, evaluate_float, evaluate_on_hardware
from .hardware import HardwareSpec

__all__ = ["CrossbarModel", "HardwareSpec", "Metrics", "convert", "evaluate", "evaluate_float", "evaluate_on_hardware"]
