"""Training and checkpoints (float software training; crossbar-aware variants build on it).

A checkpoint is a plain dict saved with ``torch.save`` and read with
``torch.load(..., weights_only=True)``:
    {"format": "xbar-sweep/1", "model": name, "model_kwargs": {...}, "state_dict": {...},
     "meta": {dataset, test_top1, epochs, seed, torch, created, ...}}
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .data import DataSplit, load_dataset, loader
from .evaluation import evaluate_float
from .models import build_model

CHECKPOINT_FORMAT = "xbar-sweep/1"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    l1: float = 0.0  # L1 penalty on Linear/Conv2d weights (Yu's sparsity induction)
    seed: int = 0


@dataclass
class TrainResult:
    model: nn.Module
    test_top1: float
    seconds: float
    history: list[float] = field(default_factory=list)


def l1_penalty(model: nn.Module) -> torch.Tensor:
    terms = [m.weight.abs().sum() for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return torch.stack(terms).sum()


def train_model(
    model: nn.Module, data: DataSplit, cfg: TrainConfig, loss_hook: Callable[[nn.Module], torch.Tensor] | None = None
) -> TrainResult:
    """Adam + cosine schedule; deterministic for a given seed on one device."""
    torch.manual_seed(cfg.seed)
    dev = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    train_loader = loader(data.train, cfg.batch_size, shuffle=True, seed=cfg.seed)
    test_loader = loader(data.test, 512)
    start, history = time.perf_counter(), []
    for _ in range(cfg.epochs):
        model.train()
        for x, y in train_loader:
            x, y = x.to(dev), y.to(dev)
            loss = F.cross_entropy(model(x), y)
            if cfg.l1 > 0:
                loss = loss + cfg.l1 * l1_penalty(model)
            if loss_hook is not None:
                loss = loss + loss_hook(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        history.append(evaluate_float(model, test_loader).top1)
    model.eval()
    return TrainResult(
        model, history[-1] if history else evaluate_float(model, test_loader).top1, time.perf_counter() - start, history
    )


def load_checkpoint(path: str | io.BytesIO, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model from an xbar-sweep checkpoint (a path or a buffer); returns (model, meta)."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an xbar-sweep checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    model = build_model(ckpt["model"], **ckpt["model_kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt["meta"]


def model_from_bytes(blob: bytes, name: str, in_channels: int, num_classes: int, input_size: int) -> nn.Module:
    """An xbar-sweep checkpoint, or a plain state dict for the zoo/torchvision model ``name``."""
    ckpt = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    if isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT:
        return load_checkpoint(io.BytesIO(blob))[0]
    model = build_model(name, in_channels=in_channels, num_classes=num_classes, input_size=input_size)
    sd = ckpt["state_dict"] if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict) else ckpt
    own = set(model.state_dict())
    model.load_state_dict({k: v for k, v in sd.items() if k in own or not k.startswith("aux")})
    return model.eval()


def load_state_dict_into(model: nn.Module, path: str) -> nn.Module:
    """Weights for a zoo/torchvision model from a plain state-dict file (e.g. torchvision's)."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    own = set(model.state_dict())
    sd = {k: v for k, v in sd.items() if k in own or not k.startswith("aux")}  # googlenet aux heads
    model.load_state_dict(sd)
    return model.eval()


def checkpoint_bytes(model: nn.Module, name: str, model_kwargs: dict, meta: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "model": name,
            "model_kwargs": model_kwargs,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "meta": meta,
        },
        buf,
    )
    return buf.getvalue()


def checkpoint_digest(blob: bytes) -> str:
    """sha256 of what a checkpoint computes with: the architecture (name, constructor arguments)
    and every tensor of its state dict (names, dtypes, shapes, bytes) - not its metadata (training
    time, creation date), so two trainings that give the same weights give the same digest."""
    ckpt = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    h = hashlib.sha256()
    if isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT:
        h.update(json.dumps([ckpt["model"], ckpt["model_kwargs"]], sort_keys=True).encode())
        state = ckpt["state_dict"]
    else:
        state = ckpt["state_dict"] if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict) else ckpt
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def train_recipe(data: DataSplit, model_name: str, cfg: TrainConfig, dataset: str) -> tuple[TrainResult, bytes]:
    """Train a zoo model from scratch; returns the result and its checkpoint bytes."""
    kwargs = {"in_channels": data.in_channels, "num_classes": data.num_classes, "input_size": data.input_size}
    torch.manual_seed(cfg.seed)  # the initial weights are part of the recipe
    model = build_model(model_name, **kwargs)
    result = train_model(model, data, cfg)
    meta = {
        "dataset": dataset,
        "test_top1": result.test_top1,
        "train": asdict(cfg),
        "seconds": result.seconds,
        "torch": str(torch.__version__),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return result, checkpoint_bytes(result.model, model_name, kwargs, meta)


def train_default(
    path: str, dataset: str = "digits", model_name: str = "lenet5", cfg: TrainConfig | None = None, input_size: int = 28
) -> TrainResult:
    """Train a zoo model on a data set and save it (default: LeNet-5 on the bundled digits)."""
    result, blob = train_recipe(load_dataset(dataset, input_size=input_size), model_name, cfg or TrainConfig(), dataset)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(blob)
    os.replace(tmp, path)  # never leave a half-written checkpoint
    return result
