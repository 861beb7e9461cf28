"""The CUDA path (issue 12), run where a GPU is present and skipped elsewhere (CI has none; the
meta-device tests in test_scale.py and test_iv.py stand in for the device discipline there).

What a GPU adds that those cannot: the counter-based draws are the same bits on CUDA as on the CPU
(integer arithmetic only), the float64 exact IR-drop solve agrees to rounding, a whole trial on
CUDA reads what the CPU reads, and a calibrated read makes no host round-trip (every sync is an
error under ``torch.cuda.set_sync_debug_mode``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from engine import HardwareSpec
from engine import counter_rng as cr
from engine.conversion import convert
from engine.data import loader
from engine.instance import HardwareInstance
from engine.irdrop import TileWires, effective_conductance
from engine.mitigations import parse_strategy
from engine.trial import TrialEvaluator

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CPU, GPU = torch.device("cpu"), torch.device("cuda")
HW = {
    "crossbar": {"rows": 32, "cols": 32},
    "faults": {"stuck_at_gmax_rate": 0.02, "stuck_at_gmin_rate": 0.05},
    "variation": {"sigma_rel": 0.1, "sigma_abs_delta_g": 0.3},
    "ir_drop": {"enabled": True, "r_sense_ohm": 20.0},
    "read_noise": {"enabled": True},
    "rtn": {"enabled": True},
    "column_awgn": {"sigma_lsb": 1.0},
    "frequency_hz": 1e9,
}


def test_counter_draws_are_the_same_bits_on_cuda():
    """Raw words, 32-bit draws, uniforms and Box-Muller normals bit for bit (the normals use no libm,
    only correctly rounded float32 arithmetic). Breakage caught: a device-dependent generator, a
    signed/unsigned shift that differs between the CPU and CUDA kernels, a libm call or a fused step."""
    seeds = [0, 1, 2**40 + 3, 123456789]
    for layer, stream in ((0, 0), (3, 2), (11, 7)):
        kc, kg = cr.stream_keys(seeds, layer, stream, CPU), cr.stream_keys(seeds, layer, stream, GPU)
        assert torch.equal(kc, kg.cpu())
        n = [1001, 4096, 7]
        assert torch.equal(cr.words(kc.view(-1, 1).repeat(1, 3), n), cr.words(kg.view(-1, 1).repeat(1, 3), n).cpu())
        assert torch.equal(cr.uint32(kc, 100_003), cr.uint32(kg, 100_003).cpu())
        assert torch.equal(cr.uniform(kc, 100_003), cr.uniform(kg, 100_003).cpu())
        zc, zg = cr.normal(kc, 100_003), cr.normal(kg, 100_003).cpu()
        assert torch.equal(zc, zg), float((zc - zg).abs().max())  # no libm: the same bits by construction


def test_instance_draws_and_programmed_cells_match_the_cpu():
    hw = HardwareSpec.model_validate(HW)
    shape = (2, 2, 3, 2, 32, 32)
    levels = torch.randint(0, hw.device.levels, shape, generator=torch.Generator().manual_seed(0))
    cpu = HardwareInstance([5, 6], hw).cells(levels, 2)
    gpu = HardwareInstance([5, 6], hw).cells(levels.to(GPU), 2)
    assert cpu.faults is not None and gpu.faults is not None and gpu.faults.device.type == "cuda"
    assert torch.equal(cpu.faults, gpu.faults.cpu())
    assert torch.equal(cpu.h, gpu.h.cpu())  # normals and programming: correctly rounded steps only


def test_float64_exact_ir_drop_agrees_with_the_cpu_solve():
    g = torch.tensor(np.random.default_rng(0).uniform(1 / 3e6, 1 / 3e3, (3, 7, 64, 64)))
    w = TileWires(1.0, 4.6, 50.0, 20.0)
    cpu = effective_conductance(g, w, max_bytes=1 << 28)
    gpu = effective_conductance(g.to(GPU), w, max_bytes=1 << 28).cpu()
    assert float(((gpu - cpu).abs() / cpu.abs().max()).max()) < 1e-12


def _evaluator(lenet, digits, calib_inputs, device):
    test = torch.utils.data.TensorDataset(*(t[:300].to(device) for t in digits.test.tensors))
    return TrialEvaluator(
        {None: lenet.to(device)},
        loader(test, 150),
        [x.to(device) for x in calib_inputs],
        device,
        train_data=lambda: digits.train.tensors,
    )


def test_a_trial_on_cuda_reads_what_the_cpu_reads(lenet, digits, calib_inputs):
    """Every non-ideality and the strategies that touch layer internals, on CUDA and on the CPU:
    same draws, so the accuracies agree to the few images that a float rounding moves across an ADC
    step (here at most 1 % of 300). Breakage caught: any device-dependent draw or a CPU-only path."""
    names = ["none", "ec", "fpt", "bi", "mmse", "row_flip+row_perm"]
    hw = HardwareSpec.model_validate(HW)
    for seed in (3, 4):
        cpu = _evaluator(lenet, digits, calib_inputs, CPU).run(hw, seed, [parse_strategy(n) for n in names])
        gpu = _evaluator(lenet, digits, calib_inputs, GPU).run(hw, seed, [parse_strategy(n) for n in names])
        for c, g in zip(cpu, gpu):
            assert c.mitigation == g.mitigation
            assert abs(c.metrics.top1 - g.metrics.top1) <= 0.01 + 1e-9, (c.mitigation, c.metrics, g.metrics)


def test_the_newton_read_runs_on_cuda():
    from test_iv import IR

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3))
    gen = torch.Generator().manual_seed(1)
    data = [(torch.rand(8, 12, generator=gen), torch.randint(0, 3, (8,), generator=gen))]
    calib = [torch.rand(16, 12, generator=gen)]
    hw = HardwareSpec.model_validate(
        {
            "crossbar": {"rows": 8, "cols": 16},
            "input": {"v_read_v": 0.2},
            "ir_drop": IR,
            "iv": {"model": "sinh", "v0_v": 0.1},
        }
    )
    out = []
    for dev in (CPU, GPU):
        ev = TrialEvaluator({None: net.to(dev)}, [(x.to(dev), y.to(dev)) for x, y in data], calib, dev)
        out.append(ev.run(hw, 5, [parse_strategy("none")])[0])
    assert out[0].solver_iterations == out[1].solver_iterations is not None
    assert abs(out[0].metrics.loss - out[1].metrics.loss) < 1e-4


NO_IR = {k: v for k, v in HW.items() if k != "ir_drop"}
READS = {  # one per read path of CrossbarLayer.read
    "noisy_bitserial_adc": {**NO_IR, "input": {"input_bits": 4, "dac_bits": 2}, "adc": {"bits": 6}},
    "folded_ideal_adc": {"faults": HW["faults"], "adc": {"kind": "ideal"}},
    "digitised_irdrop_8bit": {"faults": HW["faults"], "ir_drop": HW["ir_drop"], "crossbar": HW["crossbar"]},
    "dac_loading_signed_slices": {
        **NO_IR,
        "dac_loading": {"enabled": True},
        "input": {"input_bits": 6, "dac_bits": 3},
        "device": {"bits_per_cell": 2},
        "mapping": {"weight_bits": 6},
    },
}


@pytest.mark.parametrize("case", sorted(READS))
def test_a_calibrated_read_makes_no_host_round_trip(lenet, digits, calib_inputs, case):
    """Under ``set_sync_debug_mode("error")`` a device-to-host copy, a pageable host-to-device copy
    or ``.item()`` raises: the read of a programmed, calibrated model must not sync, and neither must
    programming another instance (its keys come from pinned memory without blocking; the exact
    IR-drop solve is left out: its chunk loop is host-driven). Breakage caught:
    ``.tolist()``/``.item()``/``torch.tensor([...], device=...)`` in a read path (the first run found
    one in the bit-serial input split), a calibrated scalar read per programmed layer."""
    hw = HardwareSpec.model_validate(READS[case])
    xm = convert(lenet.to(GPU), hw)
    xm.calibrate([x.to(GPU) for x in calib_inputs])
    xm.program([1, 2])
    xm.reset_read_noise()
    x = digits.test.tensors[0][:64].to(GPU)
    with torch.no_grad():
        ref = xm(x)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = xm(x)
            if "irdrop" not in case:
                xm.program([3, 4])
                xm(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert out.shape == ref.shape and torch.isfinite(out).all()
