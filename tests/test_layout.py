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
