"""``python -m benchmarks.training``: one training epoch on the crossbar over one float epoch.

LeNet-5 on the digits training split (1,257 images, batch 64, SGD lr 0.05 momentum 0.9): the
crossbar epoch (8-bit DAC and ADC on the forward and the transposed backward reads, TxSim eq. 1
updates with v = 0.01, gamma = 1, 64x64 tiles) over the plain float epoch of the same model,
data and optimiser in the same run (``ratio_train``; TxSim reports 14x on a GPU; goal <= 5).
Also with exact IR drop refreshed every 10 updates (interpolated FCM in between).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from rich.console import Console

from engine import HardwareSpec
from engine.data import load_dataset, loader
from engine.models import build_model
from engine.training import analog_layers, to_analog
from engine.training.trainer import native_weight_ranges

from .common import write

CONFIGS = {
    "periphery_8bit": {"update": {"nonlinearity": 0.01, "write_noise": 1.0, "write_granularity": "batch"}},
    "periphery_8bit_irdrop_every_10": {
        "update": {"nonlinearity": 0.01, "write_noise": 1.0, "write_granularity": "batch", "refresh_every": 10},
        "ir_drop": {"enabled": True},
    },
}


def _epoch(model, data, step) -> float:
    start = time.perf_counter()
    model.train()
    for x, y in loader(data.train, 64, shuffle=True, seed=0):
        F.cross_entropy(model(x), y).backward()
        step()
    return time.perf_counter() - start


def main() -> None:
    data = load_dataset("digits")
    ranges = native_weight_ranges("lenet5", data, 4, 64, 0.05, 0, 0.9)
    results = {}
    for name, hw in CONFIGS.items():
        times = {"float": [], "crossbar": []}
        for _ in range(3):
            torch.manual_seed(0)
            fm = build_model("lenet5", 1, 10, 28)
            opt = torch.optim.SGD(fm.parameters(), lr=0.05, momentum=0.9)
            times["float"].append(_epoch(fm, data, lambda: (opt.step(), opt.zero_grad(set_to_none=True))))
            torch.manual_seed(0)
            xm = to_analog(build_model("lenet5", 1, 10, 28), HardwareSpec.model_validate(hw), 1, ranges)
            layers = analog_layers(xm)
            digital = [p for n, p in xm.named_parameters() if not n.endswith(".delta")]
            dopt = torch.optim.SGD(digital, lr=0.05, momentum=0.9)

            def step():
                for layer in layers:
                    layer.apply_update(0.05, 0.9)
                dopt.step()
                dopt.zero_grad(set_to_none=True)

            times["crossbar"].append(_epoch(xm, data, step))
        f, c = min(times["float"]), min(times["crossbar"])
        results[name] = {"float_epoch_s": f, "crossbar_epoch_s": c, "ratio_train": c / f}
    path = write(
        "training",
        {
            "goal_ratio_train": 5.0,
            "txsim_reported_ratio_gpu": 14.0,
            "results": results,
            "threads": torch.get_num_threads(),
        },
    )
    for name, r in results.items():
        Console().print(
            f"{name}: float {r['float_epoch_s']:.3f} s/epoch, crossbar {r['crossbar_epoch_s']:.3f} s/epoch, "
            f"ratio_train {r['ratio_train']:.2f}"
        )
    Console().print(f"-> {path}")


if __name__ == "__main__":
    main()
