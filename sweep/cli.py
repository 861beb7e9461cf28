"""``xbar-sweep`` command line."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

console = Console()


def _train(args: argparse.Namespace) -> int:
    from engine.train import TrainConfig, train_default

    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    result = train_default(args.output, dataset=args.data, model_name=args.model, cfg=cfg)
    console.print(f"trained {args.model} on {args.data}: test top-1 {result.test_top1:.4f} "
                  f"in {result.seconds:.1f} s -> {args.output}")
    return 0


def _engine_demo(args: argparse.Namespace) -> int:
    """Float model vs ideal crossbar vs a few sampled non-ideal instances (PytorX settings)."""
    import torch

    from engine import HardwareSpec, convert, evaluate, evaluate_float
    from engine.data import load_dataset, loader
    from engine.train import TrainConfig, train_default

    torch.set_num_threads(max(1, torch.get_num_threads()))
    result = train_default(args.checkpoint, cfg=TrainConfig())
    data = load_dataset("digits")
    test = loader(data.test, 540)
    calib = [x for x, _ in loader(data.train, 256)]
    table = Table(title="LeNet-5 on digits: float vs crossbar (64x64 tiles, 8-bit DAC/ADC, 7-bit cells)")
    for col in ("model", "instance", "top-1", "top-5", "loss"):
        table.add_column(col)
    sw = evaluate_float(result.model, test)
    table.add_row("float (software)", "-", f"{sw.top1:.4f}", f"{sw.top5:.4f}", f"{sw.loss:.4f}")
    ideal = convert(result.model, HardwareSpec())
    ideal.calibrate(calib)
    m = evaluate(ideal, test, None)[0]
    table.add_row("ideal crossbar", "-", f"{m.top1:.4f}", f"{m.top5:.4f}", f"{m.loss:.4f}")
    hw = HardwareSpec.model_validate({
        "faults": {"sa0_rate": 0.0175, "sa1_rate": 0.0904, "convention": "pytorx"},
        "variation": {"sigma_abs_delta_g": 1 / 3},
        "read_noise": {"enabled": True}, "rtn": {"enabled": True}, "frequency_hz": 1e8,
    })
    xm = convert(result.model, hw)
    xm.calibrate(calib)
    for seed, metrics in zip(range(args.instances), evaluate(xm, test, list(range(args.instances)))):
        table.add_row("SAF 1.75/9.04 % + dG/3 + noise @100 MHz", str(seed), f"{metrics.top1:.4f}", f"{metrics.top5:.4f}", f"{metrics.loss:.4f}")
    console.print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xbar-sweep", description="Monte Carlo sweeps of DNN accuracy on non-ideal ReRAM crossbars")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a zoo model on a data set and save a checkpoint")
    t.add_argument("--model", default="lenet5")
    t.add_argument("--data", default="digits")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("-o", "--output", default="results/lenet5_digits.pt")
    t.set_defaults(func=_train)
    d = sub.add_parser("engine-demo", help="float vs ideal vs sampled non-ideal crossbars on digits")
    d.add_argument("--instances", type=int, default=5)
    d.add_argument("--checkpoint", default="results/lenet5_digits.pt")
    d.set_defaults(func=_engine_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
