"""``python -m benchmarks.engine``: cost of one trial relative to the plain float forward.

A trial = sample the instance + map + evaluate the whole data set. For each model (digits
LeNet-5 on the 540-image test split; ResNet-20 on 1,000 random 32x32 images) and each
configuration, the ratio is trial time / float forward time of the same model on the same data
in the same run (medians of repeats):

* ``ratio_quantized``: stuck-at faults (1.75 % / 9.04 %) + 5 % programming variation + 8-bit
  weights and inputs, ideal ADC (the folded path);
* ``ratio_bitserial``: the same instance with 8-bit inputs streamed through a 1-bit DAC and an
  8-bit ADC per tile and chunk (the tiled path, 8 reads per input);
* ``ratio_batched_8``: per-instance time of 8 instances in one batched call over 8 sequential
  single-instance trials (quantized configuration).
"""

from __future__ import annotations

import argparse

import torch
from rich.console import Console
from rich.table import Table

from engine import HardwareSpec, convert, evaluate, evaluate_float
from engine.data import load_dataset, loader
from engine.models import build_model
from engine.train import TrainConfig, train_default

from .common import median_seconds, write

STATIC = {"faults": {"stuck_at_gmax_rate": 0.0175, "stuck_at_gmin_rate": 0.0904}, "variation": {"sigma_rel": 0.05}}
CONFIGS = {
    "quantized": {**STATIC, "adc": {"kind": "ideal"}},
    "bitserial": {**STATIC, "input": {"input_bits": 8, "dac_bits": 1}, "adc": {"bits": 8}},
}


def _case(name: str, model: torch.nn.Module, test, calib, repeats: int) -> dict:
    row = {"model": name}
    t_float = median_seconds(lambda: evaluate_float(model, test), repeats)
    row["float_s"] = t_float
    for cfg, hw in CONFIGS.items():
        xm = convert(model, HardwareSpec.model_validate(hw))
        xm.calibrate(calib)
        seed = iter(range(10**6))
        t = median_seconds(lambda: evaluate(xm, test, [next(seed)]), repeats)
        row[f"trial_{cfg}_s"] = t
        row[f"ratio_{cfg}"] = t / t_float
        if cfg == "quantized":
            t8 = median_seconds(lambda: evaluate(xm, test, [next(seed) for _ in range(8)]), max(2, repeats // 2))
            row["batched_8_per_instance_s"] = t8 / 8
            row["ratio_batched_8"] = (t8 / 8) / t
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--eval-batch", type=int, default=540, help="data batch size of every evaluation")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    rows = []
    digits = load_dataset("digits")
    lenet = train_default("results/bench_lenet5.pt", cfg=TrainConfig(epochs=10)).model
    rows.append(_case("lenet5_digits", lenet, loader(digits.test, args.eval_batch),
                      [x for x, _ in loader(digits.train, 256)], args.repeats))
    resnet = build_model("resnet20", in_channels=3, num_classes=10, input_size=32).eval()
    x = torch.randn(1000, 3, 32, 32)
    data = torch.utils.data.TensorDataset(x, torch.randint(0, 10, (1000,)))
    rows.append(_case("resnet20_random_1000", resnet, loader(data, 250), [x[:250]], max(2, args.repeats // 2)))
    path = write("engine", {"goals": {"ratio_quantized": 1.5, "ratio_bitserial": 3.0, "ratio_batched_8": 0.5},
                            "eval_batch": args.eval_batch, "results": rows})
    table = Table(title=f"engine benchmark ({path})")
    for c in ("model", "float (s)", "ratio_quantized", "ratio_bitserial", "ratio_batched_8"):
        table.add_column(c)
    for r in rows:
        table.add_row(r["model"], f"{r['float_s']:.4f}", f"{r['ratio_quantized']:.2f}", f"{r['ratio_bitserial']:.2f}", f"{r['ratio_batched_8']:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
