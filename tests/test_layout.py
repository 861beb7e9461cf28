"""The layering the README and ARCHITECTURE.md promise, checked on the source: ``sweep/`` and
``analysis/`` use the engine through its facade only, and the engine knows nothing of Ray or the sweep."""

from __future__ import annotations

import ast
import pathlib

import pytest

import engine

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _imports(package: str) -> list[tuple[str, str]]:
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                out.append((str(path.relative_to(ROOT)), node.module))
            elif isinstance(node, ast.Import):
                out.extend((str(path.relative_to(ROOT)), a.name) for a in node.names)
    return out


@pytest.mark.parametrize("package", ["sweep", "analysis"])
def test_sweep_and_analysis_import_the_engine_facade_only(package):
    inside = [(f, m) for f, m in _imports(package) if m.startswith("engine.")]
    assert not inside, f"{package} reaches past engine/__init__.py: {inside}"


def test_engine_knows_nothing_of_ray_or_the_sweep():
    outside = [(f, m) for f, m in _imports("engine") if m.split(".")[0] in ("ray", "sweep", "analysis", "mlflow")]
    assert not outside, outside


def test_every_facade_name_resolves():
    for name in engine.__all__:
        assert getattr(engine, name) is not None, name


def test_reading_an_uncalibrated_crossbar_is_a_clear_error():
    """Calibration results are fitted quantities: a read before calibrate() names the missing step
    instead of quantising with a zero DAC step (NaN logits)."""
    import torch
    from torch import nn

    from engine import HardwareSpec, convert

    xm = convert(nn.Sequential(nn.Linear(4, 3)), HardwareSpec.model_validate({"adc": {"kind": "ideal"}}))
    with pytest.raises(RuntimeError, match=r"not calibrated; call calibrate\(\) first"):
        xm(torch.rand(2, 4))
    xm = convert(nn.Sequential(nn.Linear(4, 3)), HardwareSpec())
    xm.calibrate([torch.rand(8, 4)])
    assert torch.isfinite(xm(torch.rand(2, 4))).all()


def test_calibration_passes_are_observers_attached_for_the_pass_only():
    """Calibration is an observer of reads, not a layer mode: ``observing`` attaches one per layer and
    detaches them even when the pass fails; an observer never sees a folded read (no sensed values) -
    a layer programmed before its observer was attached says so instead of recording nothing. Catches
    an observer left attached (later reads would skip the ADC) and a silent empty calibration."""
    import torch
    from torch import nn

    from engine import HardwareSpec, convert
    from engine.calibration import ColumnRange

    xm = convert(nn.Sequential(nn.Linear(4, 3)), HardwareSpec.model_validate({"adc": {"kind": "ideal"}}))
    xm.calibrate([torch.rand(8, 4)])
    layer = xm.crossbar_layers()[0]
    with pytest.raises(KeyError):
        with xm.observing(ColumnRange) as seen:
            raise KeyError("a failing pass")
    assert layer.observer is None and isinstance(seen[layer.name], ColumnRange)
    xm.program(None)  # folded: the ideal ADC makes the read linear
    with pytest.raises(RuntimeError, match="programmed before its observer was attached"):
        with xm.observing(ColumnRange):
            xm(torch.rand(2, 4))
    with xm.observing(ColumnRange) as seen:
        xm.program(None)
        xm(torch.rand(2, 4))
    assert len(seen[layer.name].records) == 1 and layer.observer is None


def test_programmed_state_is_an_immutable_value():
    """The programmed state is a frozen value built by engine.programming.program_state: it cannot be
    assigned to, re-programming makes a new one and leaves the old intact (a mitigation holding the
    previous state keeps what it saw), and the same cells give equal operands. Catches a state edited
    in place (a stale operand served to a later read)."""
    import dataclasses

    import torch
    from torch import nn

    from engine import HardwareSpec, convert

    torch.manual_seed(0)
    hw = HardwareSpec.model_validate({"faults": {"stuck_at_gmax_rate": 0.1}, "crossbar": {"rows": 16, "cols": 16}})
    xm = convert(nn.Sequential(nn.Linear(30, 8)), hw)
    xm.calibrate([torch.rand(8, 30)])
    layer = xm.crossbar_layers()[0]
    xm.program([3])
    first = layer.state
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.h_eff = first.h_eff * 0  # type: ignore[misc]
    kept = first.h_eff.clone()
    xm.program([4])
    assert layer.state is not first and torch.equal(first.h_eff, kept)
    assert not torch.equal(layer.state.h_eff, kept)  # another instance's faults
    xm.program([3])
    assert torch.equal(layer.state.h_eff, kept)
    layer.release()
    with pytest.raises(RuntimeError, match="nothing is programmed"):
        _ = layer.state


@pytest.mark.parametrize(
    "raw, path, detail",
    [
        ({"adc": {"kind": "ideal"}}, "FoldedRead", {}),
        ({"adc": {"bits": 6}}, "DigitisedRead", {}),
        ({"adc": {"bits": 6}, "iv": {"model": "sinh"}}, "DigitisedRead", {}),
        ({"adc": {"bits": 6}, "read_noise": {"enabled": True}}, "TiledRead", {"adc": "fitted"}),
        ({"adc": {"kind": "ideal"}, "column_awgn": {"sigma_lsb": 1.0}}, "TiledRead", {"adc": "none"}),
        ({"adc": {"bits": 6, "subtract": "digital"}}, "TiledRead", {"adc": "fitted"}),
        ({"adc": {"bits": 6}, "dac_loading": {"enabled": True}}, "TiledRead", {"adc": "fitted"}),
    ],
)
def test_the_read_path_is_chosen_once_when_programming(raw, path, detail):
    """The read path is a small strategy object of the programmed state (engine.reads), chosen by
    program_state, never switched per read. Each choice reads as the general tiled read does: the
    folded and digitised fast paths equal it (within one ADC code of one read), on two sampled
    instances. Catches a fast path that skips a stage the general read has (e.g. the sinh I-V's
    V_0 sinh(V / V_0) rows, which the digitised read once dropped)."""
    from dataclasses import replace

    import torch
    from torch import nn

    from engine import HardwareSpec, convert
    from engine.reads import TiledRead

    torch.manual_seed(1)
    hw = HardwareSpec.model_validate(
        {**raw, "faults": {"stuck_at_gmin_rate": 0.05}, "crossbar": {"rows": 16, "cols": 16}}
    )
    xm = convert(nn.Sequential(nn.Linear(40, 20)), hw)
    x = torch.rand(32, 40, generator=torch.Generator().manual_seed(2))
    xm.calibrate([x])
    xm.program([3, 4])
    layer = xm.crossbar_layers()[0]
    chosen = layer.state.path
    assert type(chosen).__name__ == path and all(getattr(chosen, k) == v for k, v in detail.items())
    if path == "TiledRead":
        return  # the general read itself: the other tests of the read check its values
    with torch.no_grad():
        fast = xm(x)
        layer.allow_fold = False
        layer.program_cells(layer.state.cells)  # the same cells, the tiled read
        if path == "DigitisedRead":
            layer._prog = replace(layer.state, path=TiledRead(adc="fitted"))
        assert type(layer.state.path) is TiledRead
        general = xm(x)
    adc = layer.adc
    # one ADC code of one read, in output units (the largest DAC chunk's weight); float rounding without an ADC
    one_code = 0.0 if adc is None else float(adc.delta_i.max() * layer.coding.plane_coefficients().max())
    one_code *= float(layer.delta_x) * layer.mapped.delta_w
    assert not torch.equal(fast[0], fast[1])  # two different instances
    diff = (fast - general).abs()
    assert float(diff.max()) <= 1.001 * one_code + 1e-5
    assert float((diff > 1e-5).float().mean()) <= 0.01


def test_an_output_stage_set_after_programming_chooses_the_read_path_again():
    """MMSE is set after the instance is programmed (it needs the programmed twin's statistics), but a
    folded or digitised read has no column values to correct. Setting it programs the layer again from
    the same cells, with the per-read noise continuing. Catches the folded read silently ignoring an
    MMSE stage (an ideal ADC without noise folds)."""
    import torch
    from torch import nn

    from engine import HardwareSpec, convert
    from engine.reads import FoldedRead, TiledRead

    xm = convert(nn.Sequential(nn.Linear(40, 20)), HardwareSpec.model_validate({"adc": {"kind": "ideal"}}))
    x = torch.rand(32, 40, generator=torch.Generator().manual_seed(2))
    xm.calibrate([x])
    xm.program([3])
    layer = xm.crossbar_layers()[0]
    cells = layer.cells
    assert isinstance(layer.state.path, FoldedRead)
    with torch.no_grad():
        plain = xm(x)
        double = (torch.full((layer.grid.slices,), 2.0), torch.zeros(layer.grid.slices))  # J_hat = 2 J
        xm.set_output_stage({layer.name: {"mmse": double}})
        assert isinstance(layer.state.path, TiledRead) and layer.state.path.mmse and layer.cells is cells
        corrected = xm(x)
        xm.set_output_stage({layer.name: {"mmse": None}})
        assert isinstance(layer.state.path, FoldedRead)
        assert torch.allclose(xm(x), plain, atol=1e-5)
    bias = xm.net[0].bias.detach()
    assert torch.allclose(corrected - bias, 2 * (plain - bias), rtol=1e-4, atol=1e-5)  # the stage acts on the read


def test_a_spec_edited_in_place_is_read_as_edited_at_the_next_programming():
    """A layer keeps its read plan (engine.programming.ReadPlan) across the instances it is programmed
    with, keyed by the hardware spec it was made for. A spec edited in place (each assignment is
    re-validated) is planned again: read noise switched on turns the folded read into the noisy tiled
    one, read as a twin converted from the edited spec reads. Catches a plan kept by the spec's
    identity alone."""
    import torch
    from torch import nn

    from engine import HardwareSpec, convert
    from engine.reads import FoldedRead, TiledRead

    raw = {"adc": {"kind": "ideal"}, "faults": {"stuck_at_gmin_rate": 0.05}, "crossbar": {"rows": 16, "cols": 16}}
    net = nn.Sequential(nn.Linear(40, 20))
    x = torch.rand(32, 40, generator=torch.Generator().manual_seed(2))
    xm = convert(net, HardwareSpec.model_validate(raw))
    xm.calibrate([x])
    xm.program([3])
    layer = xm.crossbar_layers()[0]
    assert isinstance(layer.state.path, FoldedRead) and layer.hw is xm.hw
    plan = layer.read_plan(layer.cells)
    xm.program([4])
    assert layer.read_plan(layer.cells) is plan  # kept across instances
    xm.hw.read_noise.enabled = True
    xm.program([3])
    assert isinstance(layer.state.path, TiledRead)
    edited = convert(net, HardwareSpec.model_validate({**raw, "read_noise": {"enabled": True}}))
    edited.calibrate([x])
    edited.program([3])
    with torch.no_grad():
        assert torch.equal(xm(x), edited(x))


def test_retraining_returns_its_weights_and_never_trains_the_twins_parameters(lenet, calib_inputs):
    """Re-training (RxNN Sec. VI) trains its own copy of the parameters and returns them (``Weights``);
    the twin's layers only map and program what ``load_weights`` gives them. Catches an optimiser
    stepping the twin's parameters (their autograd state would change) and unknown weight names
    loaded silently."""
    import torch

    from engine import HardwareSpec, convert
    from engine.mitigations import TrialContext, Weights, parse_strategy

    hw = HardwareSpec.model_validate({"faults": {"stuck_at_gmin_rate": 0.1}})
    xm = convert(lenet, hw)
    xm.calibrate(calib_inputs)
    retrain = parse_strategy({"name": "retrain", "iterations": 3, "batch_size": 8}).components[0]
    x = torch.cat(calib_inputs)
    ctx = TrialContext(calibration_inputs=calib_inputs, train_loader=(x, torch.zeros(len(x), dtype=torch.long)), seed=0)
    initial = retrain.prepare(xm, ctx)
    assert isinstance(initial, Weights)
    instance = xm.program([5])
    before = {n: p.detach().clone() for n, p in xm.named_parameters()}
    update = retrain.after_program(xm, ctx)
    assert isinstance(update, Weights) and xm.instance is instance
    assert all(p.grad is None for p in xm.parameters())  # the twin's parameters never took a gradient
    changed = [n for n, t in update.state.items() if not torch.equal(t, before[n])]
    assert changed and all(torch.equal(update.state[n], p) for n, p in xm.named_parameters() if n in update.state)
    xm.load_weights(initial.state)  # back to the trained weights, programmed again on the same chip
    assert xm.instance is instance
    assert all(torch.equal(p, before[n]) for n, p in xm.named_parameters())
    with pytest.raises(KeyError, match="unknown entries"):
        xm.load_weights({"nope.weight": torch.zeros(1)})
