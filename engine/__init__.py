"""xbar-sweep engine: non-ideal ReRAM crossbar inference in pure PyTorch (knows nothing of Ray)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Exports resolve on first use (PEP 562), so `engine.hardware` and the spec's names import without
# torch and the CLI's `validate` stays fast.
_EXPORTS = {
    "CrossbarModel": "conversion",
    "convert": "conversion",
    "Metrics": "evaluation",
    "evaluate": "evaluation",
    "evaluate_float": "evaluation",
    "evaluate_on_hardware": "evaluation",
    "HardwareSpec": "hardware",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .conversion import CrossbarModel, convert  # noqa: F401 (names of __all__, resolved lazily)
    from .evaluation import Metrics, evaluate, evaluate_float, evaluate_on_hardware  # noqa: F401
    from .hardware import HardwareSpec  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
