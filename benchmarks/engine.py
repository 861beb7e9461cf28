"""``python -m benchmarks.engine``: cost of one trial relative to the plain float forward.

A trial = sample the instance + map + evaluate the whole data set. For each model (digits
LeNet-5 on the 540-image test split; ResNet-20 on 1,000 random 32x32 images) and each
configuration, the ratio is trial time / float forward time of the same model on the same data
in the same run (medians of repeats, every configuration timed in turn with the float forward):

* ``ratio_quantized``: stuck-at faults (1.75 % / 9.04 %) + 5 % programming variation + 8-bit
  weights and inputs, ideal ADC (the folded path);
* ``ratio_bitserial``: the same instance with 8-bit inputs streamed through a 1-bit DAC and an
  8-bit ADC per tile and chunk (the tiled path, 8 reads per input);
* ``ratio_batched_8``: per-instance time of 8 instances in one batched call over 8 sequential
  single-instance trials (quantized configuration);
* ``ratio_sample``: the static sampling of one instance (counter-based draws of faults and
  variation for every cell, and the programmed conductances) over the float forward;
* ``ratio_3_strategies_irdrop`` (LeNet-5): a trial with ``[none, ec, fpt]`` over a trial with
  ``[none]``, default 64 x 64 tiles, 8-bit ADC, exact IR drop and the quantized configuration's
  faults (every strategy shares the trial's instance and its solve).

The process fixes glibc's heap thresholds as a sweep worker does (:func:`engine.steady_heap`;
``--heap default`` leaves them moving; ``steady_heap`` in the JSON says which). CPU static draws
run compiled (``execution.compile_draws``: a long sweep's steady state under ``auto``; the same bits
as eager); ``*_eager_draws`` are the same cases with eager draws, and ``first_draw_s`` the first,
compiling draw. Where a GPU is available the same cases run on it (draws
eager) and go under the ``cuda`` key.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from rich.console import Console
from rich.table import Table

from engine import HardwareSpec, convert, evaluate, evaluate_float, fused_draws, steady_heap
from engine.data import load_dataset, loader
from engine.instance import HardwareInstance
from engine.mitigations import parse_strategy
from engine.models import build_model
from engine.train import TrainConfig, train_default
from engine.trial import TrialEvaluator

from .common import interleaved_medians, machine, write

STATIC = {"faults": {"stuck_at_gmax_rate": 0.0175, "stuck_at_gmin_rate": 0.0904}, "variation": {"sigma_rel": 0.05}}
CONFIGS = {
    "quantized": {**STATIC, "adc": {"kind": "ideal"}},
    "bitserial": {**STATIC, "input": {"input_bits": 8, "dac_bits": 1}, "adc": {"bits": 8}},
}


def _sample(xm, hw: HardwareSpec, seed: int) -> None:
    """What programming an instance costs before any read operand is built: every layer's static
    draws (one pass) and programmed conductances."""
    inst = HardwareInstance([seed], hw)
    layers = xm.crossbar_layers()
    inst.program_all([(la.layer_index, la.target_levels()) for la in layers])
    _sync(layers[0].weight.device)


def _eager_draws(run):
    """``run()`` with the static draws made eagerly (a short sweep, or a worker before ``auto`` compiles)."""
    policy = fused_draws.status()["policy"]
    fused_draws.set_policy("never")
    try:
        return run()
    finally:
        fused_draws.set_policy(policy)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _strategies_irdrop(model: torch.nn.Module, test, calib, device: torch.device, repeats: int) -> dict:
    hw = HardwareSpec.model_validate({**STATIC, "ir_drop": {"enabled": True}})
    ev = TrialEvaluator({None: model}, test, calib, device)
    one, three = [parse_strategy("none")], [parse_strategy(s) for s in ("none", "ec", "fpt")]
    ev.run(hw, 10**6, three)  # twins converted and calibrated once per sweep, not per trial
    seed = iter(range(10**6))
    runs = {"one": lambda: ev.run(hw, next(seed), one), "three": lambda: ev.run(hw, next(seed), three)}
    t = interleaved_medians(runs, repeats)
    return {
        "trial_none_irdrop_s": t["one"],
        "trial_none_ec_fpt_irdrop_s": t["three"],
        "ratio_3_strategies_irdrop": t["three"] / t["one"],
    }


def _case(name: str, model: torch.nn.Module, test, calib, repeats: int, irdrop: bool = False) -> dict:
    """Every configuration is timed in turn with the float forward (interleaved_medians), so each
    ratio compares runs made under the same machine load."""
    xm = {cfg: convert(model, HardwareSpec.model_validate(hw)) for cfg, hw in CONFIGS.items()}
    for m in xm.values():
        m.calibrate(calib)
    q = xm["quantized"]
    seed = iter(range(10**6))
    started = time.perf_counter()
    _sample(q, q.hw, next(seed))  # the first compiled draw of this model (CPU): compile and check
    compile_s = time.perf_counter() - started
    t = interleaved_medians(
        {
            "float": lambda: evaluate_float(model, test),
            "sample": lambda: _sample(q, q.hw, next(seed)),
            "sample_eager": lambda: _eager_draws(lambda: _sample(q, q.hw, next(seed))),
            "quantized": lambda: evaluate(q, test, [next(seed)]),
            "quantized_eager": lambda: _eager_draws(lambda: evaluate(q, test, [next(seed)])),
            "batched_8": lambda: evaluate(q, test, [next(seed) for _ in range(8)]),
            "bitserial": lambda: evaluate(xm["bitserial"], test, [next(seed)]),
        },
        repeats,
    )
    row = {"model": name, "float_s": t["float"], "sample_s": t["sample"], "ratio_sample": t["sample"] / t["float"]}
    row["draws"] = fused_draws.status()
    row["first_draw_s"] = compile_s
    for key in ("sample", "quantized"):
        row[f"{key}_eager_draws_s"] = t[f"{key}_eager"]
        row[f"ratio_{key}_eager_draws"] = t[f"{key}_eager"] / t["float"]
    for cfg in CONFIGS:
        row[f"trial_{cfg}_s"] = t[cfg]
        row[f"ratio_{cfg}"] = t[cfg] / t["float"]
    row["batched_8_per_instance_s"] = t["batched_8"] / 8
    row["ratio_batched_8"] = (t["batched_8"] / 8) / t["quantized"]
    if irdrop:
        row.update(_strategies_irdrop(model, test, calib, next(model.parameters()).device, repeats))
    return row


def _cases(device: torch.device, args) -> list[dict]:
    torch.manual_seed(0)
    digits = load_dataset("digits")
    lenet = train_default("results/bench_lenet5.pt", cfg=TrainConfig(epochs=10)).model.to(device)
    dig = torch.utils.data.TensorDataset(*(t.to(device) for t in digits.test.tensors))
    rows = [
        _case(
            "lenet5_digits",
            lenet,
            loader(dig, args.eval_batch),
            [x.to(device) for x, _ in loader(digits.train, 256)],
            args.repeats,
            irdrop=True,
        )
    ]
    resnet = build_model("resnet20", in_channels=3, num_classes=10, input_size=32).eval().to(device)
    x = torch.randn(1000, 3, 32, 32, device=device)
    data = torch.utils.data.TensorDataset(x, torch.randint(0, 10, (1000,), device=device))
    rows.append(_case("resnet20_random_1000", resnet, loader(data, 250), [x[:250]], max(2, args.repeats // 3)))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--eval-batch", type=int, default=540, help="data batch size of every evaluation")
    ap.add_argument(
        "--devices",
        default="cpu,cuda",
        help="comma list; cuda runs only where a GPU is; without cpu the stored CPU figures are kept",
    )
    ap.add_argument(
        "--heap", choices=("steady", "default"), default="steady", help="steady: glibc thresholds as a worker sets them"
    )
    args = ap.parse_args(argv)
    heap = steady_heap() if args.heap == "steady" else False  # engine.heap, as the sweep worker does
    # a long sweep's steady state: the CPU draws compiled (``auto`` compiles after 10 s of eager drawing);
    # each row also reports the eager-draw figures and the first (compiling) draw
    fused_draws.reset("always")
    devices = [d for d in args.devices.split(",") if d == "cpu" or (d == "cuda" and torch.cuda.is_available())]
    payload: dict = {
        "goals": {
            "ratio_quantized": 1.25,
            "ratio_bitserial": 3.0,
            "ratio_batched_8": 0.5,
            "ratio_sample": 0.1,
            "ratio_3_strategies_irdrop": 1.4,
        },
        "eval_batch": args.eval_batch,
        "draw_policy": "always (CPU draws compiled; *_eager_draws: eager)",
        "steady_heap": heap,
    }
    previous = os.path.join(os.path.dirname(__file__), "results", "engine.json")
    if os.path.exists(previous):  # keep the stored figures of the devices this run does not measure
        with open(previous) as f:
            old = json.load(f)
        kept = ("cuda",) if "cpu" in devices else ("machine", "created", "eval_batch", "results", "cuda")
        payload.update({k: old[k] for k in kept if k in old})
    if "cpu" in devices:
        payload["results"] = _cases(torch.device("cpu"), args)
    if "cuda" in devices:
        payload["cuda"] = {
            "device": torch.cuda.get_device_name(0),
            "machine": machine(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "results": _cases(torch.device("cuda"), args),
        }
    path = write("engine", payload)
    cols = (
        "ratio_quantized",
        "ratio_quantized_eager_draws",
        "ratio_bitserial",
        "ratio_batched_8",
        "ratio_sample",
        "ratio_sample_eager_draws",
        "ratio_3_strategies_irdrop",
    )
    for key, rows in (("cpu", payload.get("results")), ("cuda", payload.get("cuda", {}).get("results"))):
        if not rows:
            continue
        table = Table(title=f"engine benchmark, {key} ({path})")
        for c in ("model", "float (s)") + cols:
            table.add_column(c)
        for r in rows:
            table.add_row(r["model"], f"{r['float_s']:.4f}", *(f"{r[c]:.2f}" if c in r else "-" for c in cols))
        Console().print(table)


if __name__ == "__main__":
    main()
