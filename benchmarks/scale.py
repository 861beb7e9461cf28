"""``python -m benchmarks.scale``: a seed paper's own large model with exact IR drop, in bounded memory.

ResNet-18 at 224 x 224 (random weights; RxNN and TxSim evaluate ImageNet ResNets), 16 images,
64 x 64 tiles, 8-bit weights, inputs and ADC, exact IR drop (TxSim wires, 50 Ohm sense and
driver), stuck-at faults (1.75 % / 9.04 %) and 10 % programming variation:

* ``peak_rss_gb``: the process's peak resident memory over the whole run (goal <= 4 GB);
* one trial's time split into ``sample_s`` (static draws + programmed cells), ``irdrop_s`` (the
  exact solve of every tile) and ``evaluate_s``, next to the float forward of the same images;
* ``ratio_3_strategies_irdrop``: a trial with ``[none, ec, fpt]`` over a trial with ``[none]``
  (fpt with 2 batches of 8 images: it re-estimates BN statistics, its cost scales with them);
* ``vgg16_fc6_solve``: the exact solve of a 25,088 x 4,096 layer's 50,176 tiles (VGG-16 fc6) within
  the same budget (``--vgg-fc``; ~10 minutes on the 2-core CPU), with its peak resident memory.

Where a GPU is available the same measurements run on it and go under the ``cuda`` key.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time

import torch

from engine import HardwareSpec, convert, evaluate, evaluate_float, steady_heap
from engine.data import loader
from engine.instance import HardwareInstance
from engine.mitigations import parse_strategy
from engine.models import build_model
from engine.trial import TrialEvaluator

from .common import machine, write

HW = {
    "faults": {"stuck_at_gmax_rate": 0.0175, "stuck_at_gmin_rate": 0.0904},
    "variation": {"sigma_rel": 0.1},
    "ir_drop": {"enabled": True, "r_sense_ohm": 50.0, "r_driver_ohm": 50.0},
}


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _phases(model: torch.nn.Module, x: torch.Tensor, test, hw: HardwareSpec, budget: int | None, row: dict) -> None:
    """One instance's time split: static draws + programmed cells, the exact solve, evaluation."""
    device = x.device
    xm = convert(model, hw)
    xm.set_solve_budget(budget)
    xm.calibrate([x])
    layers = xm.crossbar_layers()
    row["tiles"] = sum(la.grid.arrays * la.grid.groups * la.grid.t_r * la.grid.t_c for la in layers)
    inst = HardwareInstance([1], hw)
    t = time.perf_counter()
    inst.prefetch([(la.layer_index, la.grid.cell_shape) for la in layers], device)
    for la in layers:
        inst.cells(la.target_levels(), la.layer_index)
    _sync(device)
    row["sample_s"] = time.perf_counter() - t
    t = time.perf_counter()
    for la in layers:  # the exact solve of every tile (cached in the instance)
        la.effective_conductance(inst.cells(la.target_levels(), la.layer_index))
    _sync(device)
    row["irdrop_s"] = time.perf_counter() - t
    t = time.perf_counter()
    xm.program(inst)
    row["top1"] = evaluate(xm, test, seeds=None, reprogram=False)[0].top1
    _sync(device)
    row["evaluate_s"] = time.perf_counter() - t


def resnet18_case(device: torch.device, images: int, budget_mb: float | None) -> dict:
    torch.manual_seed(0)
    model = build_model("resnet18", 3, 1000, 224).eval().to(device)
    x = torch.randn(images, 3, 224, 224, device=device)
    data = torch.utils.data.TensorDataset(x, torch.randint(0, 1000, (images,), device=device))
    test = loader(data, images)
    hw = HardwareSpec.model_validate(HW)
    budget = None if budget_mb is None else int(budget_mb * 2**20)
    row: dict = {"device": str(device), "images": images, "solve_budget_mb": budget_mb}
    t = time.perf_counter()
    evaluate_float(model, test)
    _sync(device)
    row["float_s"] = time.perf_counter() - t
    _phases(model, x, test, hw, budget, row)
    gc.collect()
    row["peak_rss_phases_gb"] = peak_rss_gb()

    ev = TrialEvaluator({None: model}, test, [x], device, solve_max_bytes=budget)
    fpt = {"name": "fpt", "batches": 2, "batch_size": 8}
    one, three = [parse_strategy("none")], [parse_strategy(s) for s in ("none", "ec", fpt)]
    ev.run(hw, 100, three)  # warm: twins converted and calibrated once per sweep, not per trial
    timings = {}
    for name, strategies, seed in (("none", one, 2), ("none_ec_fpt", three, 3)):
        t = time.perf_counter()
        ev.run(hw, seed, strategies)
        _sync(device)
        timings[name] = time.perf_counter() - t
    row["trial_none_s"], row["trial_none_ec_fpt_s"] = timings["none"], timings["none_ec_fpt"]
    row["ratio_3_strategies_irdrop"] = timings["none_ec_fpt"] / timings["none"]
    row["peak_rss_gb"] = peak_rss_gb()
    if device.type == "cuda":
        row["peak_cuda_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def vgg_fc_case(device: torch.device, budget_mb: float) -> dict:
    """The exact solve of every 64 x 64 tile of a 25,088 x 4,096 layer (VGG-16 fc6; both arrays of
    the differential pair, one 7-bit slice per 8-bit weight): 50,176 tiles, 205 M cells, with random
    programmed levels in the engine's units (dG above G_min, float32, as the layer hands them over)."""
    from engine.irdrop import TileWires, effective_conductance
    from engine.tiling import TileGrid

    hw = HardwareSpec.model_validate(HW)
    grid = TileGrid.for_layer(hw, 1, 25088, 4096)
    gen = torch.Generator(device=device).manual_seed(0)
    h = torch.randint(0, hw.device.levels, grid.cell_shape, generator=gen, device=device).to(torch.float32)
    tiles = grid.arrays * grid.t_r * grid.t_c
    dev = hw.device
    t = time.perf_counter()
    effective_conductance(
        h,
        TileWires(1.0, 4.6, 50.0, 50.0),
        max_bytes=int(budget_mb * 2**20),
        scale=dev.delta_g_s,
        offset=dev.g_min_s / dev.delta_g_s,
    )
    _sync(device)
    return {
        "device": str(device),
        "shape": [25088, 4096],
        "tiles": tiles,
        "cells": h.numel(),
        "solve_budget_mb": budget_mb,
        "solve_s": time.perf_counter() - t,
        "peak_rss_gb": peak_rss_gb(),
    }


def _child(args: list[str]) -> dict:
    """Each case in a fresh process, so its peak resident memory is its own."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.scale", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark case {args} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--budget-mb", type=float, default=256.0, help="solve budget (execution.solve_memory_mb)")
    ap.add_argument("--vgg-fc", action="store_true", help="also solve a VGG-16 fc6-sized layer (slow on a CPU)")
    ap.add_argument("--skip-resnet", action="store_true", help="keep the stored ResNet-18 result (with --vgg-fc)")
    ap.add_argument("--devices", default="cpu,cuda", help="comma list; cuda runs only where a GPU is")
    ap.add_argument(
        "--heap", choices=("steady", "default"), default="steady", help="steady: glibc thresholds as a worker sets them"
    )
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, device = args.child[0], torch.device(args.child[1])
        heap = steady_heap() if args.heap == "steady" else False  # engine.heap, as the sweep worker does
        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
        row = (
            resnet18_case(device, args.images, args.budget_mb)
            if kind == "resnet18"
            else vgg_fc_case(device, args.budget_mb)
        )
        row["steady_heap"] = heap
        print(json.dumps(row))
        return
    common = ["--images", str(args.images), "--budget-mb", str(args.budget_mb), "--heap", args.heap]
    payload: dict = {"goals": {"peak_rss_gb": 4.0, "ratio_3_strategies_irdrop": 1.4}, "hardware": HW}
    previous = os.path.join(os.path.dirname(__file__), "results", "scale.json")
    if os.path.exists(previous):  # keep earlier measurements (e.g. the CUDA key) that this run does not redo
        with open(previous) as f:
            old = json.load(f)
        payload.update({k: v for k, v in old.items() if k in ("cpu", "cuda")})
        if "cpu" not in args.devices.split(","):  # a GPU-only run keeps the CPU run's header
            payload.update({k: old[k] for k in ("machine", "created") if k in old})
    devices = [d for d in args.devices.split(",") if d == "cpu" or (d == "cuda" and torch.cuda.is_available())]
    for device in devices:
        stored = payload.get(device, {})
        if args.skip_resnet and "resnet18_224" in stored:
            entry = {k: stored[k] for k in ("machine", "resnet18_224")}
        else:
            entry = {"machine": machine(), "resnet18_224": _child([*common, "--child", "resnet18", device])}
        if args.vgg_fc:
            entry["vgg16_fc6_solve"] = _child([*common, "--child", "vgg_fc", device])
        elif "vgg16_fc6_solve" in stored:
            entry["vgg16_fc6_solve"] = stored["vgg16_fc6_solve"]
        payload[device] = entry
        print(json.dumps(entry, indent=2))
    print(write("scale", payload))


if __name__ == "__main__":
    main()
