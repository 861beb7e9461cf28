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
