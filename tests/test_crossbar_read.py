"""Reading the crossbar: conv/linear equivalence, bit-serial input, per-tile ADC clipping."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from torch import nn

from engine import HardwareSpec, convert, evaluate, evaluate_float
from engine.data import loader
from engine.models import build_model
from engine.periphery import CodeScratch
from engine.reads import DigitisedRead, TiledRead

IDEAL_ADC = {"adc": {"kind": "ideal"}}


def _converted(module: nn.Module, hw: dict, calib: torch.Tensor):
    xm = convert(nn.Sequential(module), HardwareSpec.model_validate(hw))
    xm.calibrate([calib])
    return xm, xm.crossbar_layers()[0]


def _quantised_reference(layer, x: torch.Tensor, op) -> torch.Tensor:
    """The same layer computed in float on quantised inputs and weights (PytorX eq. 5)."""
    xq = layer.coding.quantise(x, float(layer.delta_x)) * float(layer.delta_x)
    m = layer.mapped
    wq = (m.w_hat.double() * m.delta_w).float()
    return op(xq, wq)


CONVS = [
    nn.Conv2d(3, 8, 3, padding=1),
    nn.Conv2d(4, 6, 5, stride=2, padding=2, bias=False),
    nn.Conv2d(6, 6, 3, padding=1, groups=3),
    nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise
    nn.Conv2d(3, 5, (3, 2), stride=(1, 2), dilation=2, padding=1, padding_mode="reflect"),
]


@pytest.mark.parametrize("conv", CONVS, ids=lambda c: repr(c))
@pytest.mark.parametrize("fold", [True, False], ids=["folded", "tiled"])
def test_conv_equals_conv2d_on_quantised_operands(conv, fold):
    """With an ideal ADC the crossbar conv is exactly F.conv2d of the quantised input and weight;
    its error against the float conv is bounded by the quantisation steps."""
    torch.manual_seed(0)
    x = torch.randn(4, conv.in_channels, 11, 11)
    xm, layer = _converted(conv, {**IDEAL_ADC, "crossbar": {"rows": 16, "cols": 16}}, x)
    layer.allow_fold = fold
    xm.program(None)
    with torch.no_grad():
        y = xm(x)[0]
        ref = _quantised_reference(
            layer, x, lambda xq, wq: layer._conv(xq, wq.transpose(1, 2).reshape_as(conv.weight), conv.bias, conv.groups)
        )
        exact = conv(x)
    assert torch.allclose(y, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
    # |error| <= sum |x| dw/2 + |w| dx/2 + dx dw/4 per term (round-to-nearest on both operands)
    dx, dw = float(layer.delta_x), layer.mapped.delta_w
    bound = layer._conv(x.abs(), torch.full_like(conv.weight, dw / 2), None, conv.groups) + layer._conv(
        torch.full_like(x, dx / 2), conv.weight.abs() + dw / 2, None, conv.groups
    )
    assert bool(((y - exact).abs() <= bound + 1e-5).all())


def test_linear_tiled_and_folded_reads_agree():
    torch.manual_seed(1)
    lin = nn.Linear(300, 70)
    x = torch.randn(16, 300)
    xm, layer = _converted(lin, {**IDEAL_ADC, "mapping": {"realisation": "offset"}}, x)
    with torch.no_grad():
        folded = xm(x)[0]
        layer.allow_fold = False
        xm.program(None)
        tiled = xm(x)[0]
        ref = _quantised_reference(layer, x, lambda xq, wq: xq @ wq[0] + lin.bias)
    assert torch.allclose(folded, ref, atol=1e-4) and torch.allclose(tiled, ref, atol=1e-4)


@pytest.mark.parametrize("dac_bits", [1, 2, 3])
@pytest.mark.parametrize("signed", [True, False])
def test_bit_serial_input_through_ideal_adc_equals_parallel(dac_bits, signed):
    """Shift-and-add of DAC chunks (Yu Sec. II-A, two's complement top chunk) == one parallel read."""
    torch.manual_seed(2)
    lin = nn.Linear(100, 20)
    x = torch.randn(32, 100) if signed else torch.rand(32, 100)
    outs = []
    for d in (8, dac_bits):
        xm, layer = _converted(lin, {**IDEAL_ADC, "input": {"dac_bits": d}}, x)
        layer.allow_fold = False
        xm.program(None)
        assert layer.coding.signed == signed and layer.coding.planes == -(-8 // d)
        with torch.no_grad():
            outs.append(xm(x)[0])
    assert torch.allclose(outs[0], outs[1], atol=1e-5)


def test_per_tile_adc_clipping_is_real():
    """Each row tile's partial sum saturates at the ADC range before the digital sum (PytorX eq. 11).
    Catches: clipping only the digital total (total_only differs), or no clipping at all. (Until the
    uncalibrated-read check, its second half read with a zero DAC step and compared zeros to zeros.)"""
    torch.manual_seed(3)
    lin = nn.Linear(128, 4, bias=False)
    x = torch.rand(64, 128)
    hw = {"crossbar": {"rows": 32, "cols": 32}, "adc": {"bits": 6}}
    xm, layer = _converted(lin, hw, x)
    with torch.no_grad():
        y = xm(x)[0]
    # independent reference: quantised operands, partial sums per 32-row tile, clamp + round per tile
    xq = layer.coding.quantise(x, float(layer.delta_x))
    wq = layer.mapped.w_hat[0].float()
    partial = torch.stack([xq[:, t * 32 : (t + 1) * 32] @ wq[t * 32 : (t + 1) * 32] for t in range(4)])
    adc = layer.adc
    step = float(adc.delta_i[0])
    digitised = (partial / step).round().clamp(adc.lo, adc.hi) * step
    expect = digitised.sum(0) * float(layer.delta_x) * layer.mapped.delta_w
    assert torch.allclose(y, expect, rtol=1e-5, atol=1e-6)
    # the calibrated range clips no tile here; the narrower full scale below must clip some
    assert not bool(((partial / step).round() > adc.hi).any() or ((partial / step).round() < adc.lo).any())
    # a full scale below the calibrated one clips tiles whose total would not clip
    hw2 = HardwareSpec.model_validate(
        {**hw, "adc": {"bits": 6, "full_scale_a": 0.25 * step * 2**5 * layer.hw.device.delta_g_s * layer.delta_v_v}}
    )
    xm.set_hardware(hw2)  # another ADC resets the calibration: calibrate again on the same batch (same dx)
    xm.calibrate([x])
    assert float(layer.delta_x) > 0
    with torch.no_grad():
        y2 = xm(x)[0]
    assert not torch.allclose(y2, y)
    step2 = float(layer.adc.delta_i[0])
    per_tile = ((partial / step2).round().clamp(-32, 31) * step2).sum(0)
    total_only = (partial.sum(0) / step2).round().clamp(-32 * 4, 31 * 4) * step2
    assert torch.allclose(y2, per_tile * float(layer.delta_x) * layer.mapped.delta_w, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(per_tile, total_only)


def test_ideal_crossbar_at_8_8_8_bits_matches_float_accuracy(lenet, digits, calib_inputs):
    """PytorX's 8-bit DAC / weights / ADC: within 0.5 points of the float model on digits."""
    test = loader(digits.test, 540)
    sw = evaluate_float(lenet, test)
    xm = convert(lenet, HardwareSpec())
    xm.calibrate(calib_inputs)
    hw = evaluate(xm, test, None)[0]
    assert hw.count == sw.count == 540
    assert abs(hw.top1 - sw.top1) <= 0.005, (hw, sw)
    assert hw.top5 is not None and hw.top5 >= 0.99


@pytest.mark.parametrize("cin, rows", [(16, 64), (64, 64), (6, 64), (12, 20)])
def test_windowed_and_full_conv_tile_reads_agree(cin, rows):
    """Both layouts of the tile convolution (channel windows per tile, or all channels with the
    tile mask) give the read of an explicit im2col matmul."""
    torch.manual_seed(4)
    conv = nn.Conv2d(cin, 8, 3, padding=1, groups=2 if cin == 12 else 1)
    x = torch.rand(3, cin, 9, 9)
    xm, layer = _converted(conv, {"adc": {"bits": 10}, "crossbar": {"rows": rows, "cols": 64}}, x)
    outs = {}
    make_operator = layer.tile_operator
    for cell_draws in (False, True):
        layer.tile_operator = lambda _draws, d=cell_draws: make_operator(d)
        layer.drop_derived()  # the read plan holds the operator it was made with
        xm.program(None)
        assert layer._prog.op.supports_cell_draws == cell_draws
        if not cell_draws:
            assert layer._prog.op.windowed == (cin != 6)  # both layouts are exercised
        with torch.no_grad():
            outs[cell_draws] = xm(x)[0]
    assert torch.allclose(outs[False], outs[True], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["conv", "linear"])
@pytest.mark.parametrize("cells", [{"bits_per_cell": 7}, {"bits_per_cell": 2}], ids=["1-slice", "4-slice"])
def test_fast_digitised_read_equals_the_general_read(kind, cells):
    """The noiseless quantised read (ADC step folded into the operand, native layout, chunks and
    tiles contracted before slices) gives the general read's result: bit-serial 8-bit input through
    a 1-bit DAC, per-slice ADC ranges, faults and variation, two instances in one call. Dividing
    by the step before or after the sum can round a partial sum that lies within float error of a
    code boundary the other way: at most one ADC code of one read, and rarely."""
    torch.manual_seed(5)
    module = nn.Conv2d(16, 8, 3, padding=1) if kind == "conv" else nn.Linear(150, 12)
    x = torch.randn(6, 16, 7, 7) if kind == "conv" else torch.randn(32, 150)
    hw = {
        "crossbar": {"rows": 32, "cols": 32},
        "device": cells,
        "input": {"input_bits": 8, "dac_bits": 1},
        "adc": {"bits": 6, "range_scope": "slice"},
        "faults": {"stuck_at_gmax_rate": 0.02, "stuck_at_gmin_rate": 0.05},
        "variation": {"sigma_rel": 0.05},
    }
    xm, layer = _converted(module, hw, x)
    xm.program([11, 12])
    assert layer.grid.slices == (1 if cells["bits_per_cell"] == 7 else 4)
    with torch.no_grad():
        fast = xm(x)
        assert layer._prog.memoised("digitised")  # the fast path ran
        # force the general path on the same programmed cells: the same operand read by the general path
        assert isinstance(layer._prog.path, DigitisedRead)  # chosen at programming
        layer._prog = replace(layer._prog, path=TiledRead(adc="fitted"))
        general = xm(x)
    assert not torch.equal(fast[0], fast[1])  # two different instances
    one_code = (
        float(layer.coding.plane_coefficients().max() * (layer.adc.delta_i * layer.state.slice_coef).max())
        * float(layer.delta_x)
        * layer.mapped.delta_w
    )
    diff = (fast - general).abs()
    assert float(diff.max()) <= 1.001 * one_code
    assert float((diff > 1e-3 * one_code).float().mean()) <= 0.01


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_fast_read_with_error_correction_equals_the_general_read(kind):
    """PytorX Alg. 2 in the fast quantised read: the correction is digitised by its own ADC
    conversion and added before shift-and-add, as the general read does. Breakage caught: the fast
    path ignoring the correction, or digitising it together with the array's current."""
    from engine.mitigations import parse_strategy

    torch.manual_seed(6)
    module = nn.Conv2d(16, 8, 3, padding=1) if kind == "conv" else nn.Linear(150, 12)
    x = torch.randn(6, 16, 7, 7) if kind == "conv" else torch.randn(32, 150)
    hw = {
        "crossbar": {"rows": 32, "cols": 32},
        "input": {"input_bits": 8, "dac_bits": 2},
        "adc": {"bits": 7},
        "faults": {"stuck_at_gmax_rate": 0.05, "stuck_at_gmin_rate": 0.1},
    }
    xm, layer = _converted(module, hw, x)
    with torch.no_grad():
        xm.program([3])
        plain = xm(x)
        parse_strategy("ec").after_program(xm, None)
        fast = xm(x)
        assert layer._prog.memoised("digitised_correction")  # the fast path ran with the correction
        layer._prog = replace(layer._prog, path=TiledRead(adc="fitted"))  # the same operand read by the general path
        general = xm(x)
    one_code = (
        float(layer.coding.plane_coefficients().max() * layer.adc.delta_i.max())
        * float(layer.delta_x)
        * layer.mapped.delta_w
    )
    assert float((fast - plain).abs().max()) > 10 * one_code  # the correction changes the outputs
    diff = (fast - general).abs()
    assert float(diff.max()) <= 2.001 * one_code  # one code of each of the two conversions at most
    assert float((diff > 1e-3 * one_code).float().mean()) <= 0.01


@pytest.mark.parametrize(
    "hw",
    [
        {"faults": {"stuck_at_gmax_rate": 0.02, "stuck_at_gmin_rate": 0.05}, **IDEAL_ADC},  # folded reads
        {"variation": {"sigma_rel": 0.05}, "input": {"input_bits": 8, "dac_bits": 2}, "adc": {"bits": 8}},  # tiled
    ],
    ids=["folded", "tiled"],
)
def test_code_scratch_is_shared_reused_and_changes_no_output(hw, monkeypatch):
    """Large inference codes are written to one buffer shared by a model's layers (no allocation per
    read). A residual network reads the same logits with and without it, bit for bit: a read whose
    codes overwrote a live activation (the skip path) or another layer's codes would change them."""
    torch.manual_seed(0)
    net = build_model("resnet20", in_channels=3, num_classes=10, input_size=16).eval()
    x = torch.randn(6, 3, 16, 16)
    xm = convert(net, HardwareSpec.model_validate(hw))
    xm.calibrate([x])
    xm.program([3, 4])  # two instances: the folded convs read them as conv groups
    layers = xm.crossbar_layers()
    scratch = layers[0].code_scratch
    assert all(la.code_scratch is scratch for la in layers)
    with torch.no_grad():
        monkeypatch.setattr(CodeScratch, "MIN_BYTES", 1 << 40)  # never reuse
        plain = xm(x)
        assert scratch._buffer is None
        monkeypatch.setattr(CodeScratch, "MIN_BYTES", 0)  # always reuse
        reused = xm(x)
        buffer = scratch._buffer
        assert buffer is not None and buffer.numel() == 2 * 6 * 16 * 16 * 16  # the largest layer input
        again = xm(x)
        assert scratch._buffer is buffer
    assert torch.equal(plain, reused) and torch.equal(plain, again)
    like = torch.zeros(4, 8)
    with torch.no_grad():
        assert scratch.take(like) is not None and scratch.take(like.t()) is None  # not dense in a layout it keeps
        assert scratch.take(torch.zeros(4, 8, device="meta")) is None  # accelerators: their allocator reuses
    assert scratch.take(like) is None  # autograd may keep the codes
    copied = copy.deepcopy(xm)  # a copy shares one fresh scratch among its own layers
    assert len({id(la.code_scratch) for la in copied.crossbar_layers()}) == 1
    assert copied.crossbar_layers()[0].code_scratch is not scratch
