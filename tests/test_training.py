"""The default recipe: LeNet-5 on the bundled digits, >= 95 % test accuracy (its time is measured in
benchmarks, not asserted here)."""

from __future__ import annotations

import torch

from engine.train import CHECKPOINT_FORMAT, load_checkpoint


def test_default_lenet5_trains_to_95_percent(lenet_checkpoint):
    path, result = lenet_checkpoint
    assert result.test_top1 >= 0.95
    model, meta = load_checkpoint(path)
    assert meta["dataset"] == "digits" and meta["test_top1"] == result.test_top1
    raw = torch.load(path, weights_only=True)  # plain tensors and primitives only
    assert raw["format"] == CHECKPOINT_FORMAT and raw["model"] == "lenet5"
