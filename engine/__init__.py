"""xbar-sweep engine: non-ideal ReRAM crossbar inference in pure PyTorch (knows nothing of Ray).

This facade is what ``sweep/`` and ``analysis/`` use; everything else is the engine's inside."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Exports resolve on first use (PEP 562), so `engine.hardware` and the spec's names import without
# torch and the CLI's `validate` stays fast.
_EXPORTS = {
    # hardware and strategies (import without torch)
    "HardwareSpec": "hardware",
    "unused_fields": "hardware",
    "check_write_granularity": "hardware",
    "changed_values": "hardware",
    "parse_strategy": "mitigations",
    "DATASETS": "catalog",
    "MODEL_NAMES": "catalog",
    "DRAW_SCHEME": "seeding",
    "digest": "hashing",
    "file_sha256": "hashing",
    # models, data and checkpoints
    "build_model": "models",
    "load_dataset": "data",
    "download_dataset": "data",
    "calibration_batches": "data",
    "loader": "data",
    "materialise": "data",
    "subset": "data",
    "TrainConfig": "train",
    "train_default": "train",
    "train_recipe": "train",
    "checkpoint_bytes": "train",
    "model_from_bytes": "train",
    "checkpoint_digest": "train",
    "CHECKPOINT_FORMAT": "train",
    "footprint": "memory",
    "steady_heap": "heap",
    # trials
    "CrossbarModel": "conversion",
    "convert": "conversion",
    "Metrics": "evaluation",
    "evaluate": "evaluation",
    "evaluate_float": "evaluation",
    "evaluate_on_hardware": "evaluation",
    "TrialEvaluator": "trial",
    "train_on_crossbar": "training",
    "native_weight_ranges": "training.trainer",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .catalog import DATASETS, MODEL_NAMES  # noqa: F401 (names of __all__, resolved lazily)
    from .conversion import CrossbarModel, convert  # noqa: F401
    from .data import calibration_batches, download_dataset, load_dataset, loader, materialise, subset  # noqa: F401
    from .evaluation import Metrics, evaluate, evaluate_float, evaluate_on_hardware  # noqa: F401
    from .hardware import HardwareSpec, changed_values, check_write_granularity, unused_fields  # noqa: F401
    from .hashing import digest, file_sha256  # noqa: F401
    from .heap import steady_heap  # noqa: F401
    from .memory import footprint  # noqa: F401
    from .mitigations import parse_strategy  # noqa: F401
    from .models import build_model  # noqa: F401
    from .seeding import DRAW_SCHEME  # noqa: F401
    from .train import (  # noqa: F401
        CHECKPOINT_FORMAT,
        TrainConfig,
        checkpoint_bytes,
        checkpoint_digest,
        model_from_bytes,
        train_default,
        train_recipe,
    )
    from .training import train_on_crossbar  # noqa: F401
    from .training.trainer import native_weight_ranges  # noqa: F401
    from .trial import TrialEvaluator  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
