"""Scale (issue 12): one instance per trial shared by every strategy, the exact IR-drop solve in
bounded memory, everything on the model's device, and memory refused before any work."""

from __future__ import annotations

import contextlib
import gc
import weakref

import numpy as np
import pytest
import torch
import torch.utils._python_dispatch

from engine import HardwareSpec
from engine.data import loader
from engine.irdrop import SolveBudgetError, TileWires, effective_conductance, solve_bytes_per_tile
from engine.mitigations import parse_strategy
from engine.trial import TrialEvaluator
from sweep.cli import main

CPU = torch.device("cpu")
IR = {
    "crossbar": {"rows": 32, "cols": 32},
    "faults": {"stuck_at_gmax_rate": 0.02, "stuck_at_gmin_rate": 0.05},
    "variation": {"sigma_rel": 0.1},
    "ir_drop": {"enabled": True, "r_sense_ohm": 20.0},
}


def _evaluator(lenet, digits, calib_inputs, n_test=200):
    test = torch.utils.data.TensorDataset(*(t[:n_test] for t in digits.test.tensors))
    return TrialEvaluator({None: lenet}, loader(test, 100), calib_inputs, CPU, train_data=lambda: digits.train.tensors)


def _run(ev, hw, names, seed=7):
    return {
        o.mitigation.split("(")[0]: o.metrics
        for o in ev.run(HardwareSpec.model_validate(hw), seed, [parse_strategy(n) for n in names])
    }


def test_reading_strategies_share_one_draw_and_one_solve_per_layer(lenet, digits, calib_inputs):
    """[none, ec, mmse, fpt] with exact IR drop: each layer is sampled once and solved once (fpt's
    BN variant has the same crossbar weights, so its cells are the same by value). Breakage caught:
    re-sampling or re-solving per strategy, or caches keyed by object identity."""
    ev = _evaluator(lenet, digits, calib_inputs)
    _run(ev, IR, ["none", "ec", "mmse", "fpt"])
    layers = sum(isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) for m in lenet.modules())
    assert ev.last_stats == {"draws": layers, "programs": layers, "solves": layers}


def test_strategies_with_other_targets_reuse_the_draws_and_solve_again(lenet, digits, calib_inputs):
    ev = _evaluator(lenet, digits, calib_inputs)
    _run(ev, IR, ["none", "bi"])
    n = ev.last_stats["draws"]
    assert ev.last_stats == {"draws": n, "programs": 2 * n, "solves": 2 * n}


def test_sharing_the_instance_changes_no_result(lenet, digits, calib_inputs):
    """Every strategy gives the same metrics whether it runs alone on a fresh evaluator or after
    the others on the shared instance. Breakage caught: state leaking between strategies."""
    names = ["none", "ec", "fpt", "bi", "row_flip+row_perm"]
    together = _run(_evaluator(lenet, digits, calib_inputs), IR, names)
    for name in names:
        alone = _run(_evaluator(lenet, digits, calib_inputs), IR, [name])
        assert alone[name.split("(")[0]] == together[name.split("(")[0]], name


def test_a_warm_trial_derives_no_read_plan_whatever_its_strategies(lenet, digits, calib_inputs, monkeypatch):
    """Each layer keeps its read plans (engine.programming.ReadPlan) across trials of the same
    hardware, including the two ``mmse`` alternates between (programmed without its output stage to
    fit it, then with it), so a trial after the first derives none. Breakage caught: a plan cache that
    holds one plan and re-derives it at every programming of an alternating strategy."""
    from engine import programming

    ev = _evaluator(lenet, digits, calib_inputs, n_test=100)
    hw = {k: v for k, v in IR.items() if k != "ir_drop"}
    names = ["none", "ec", "mmse", "fpt", "bi"]
    _run(ev, hw, names, seed=1)
    derived = []
    real = programming.ReadPlan.of.__func__
    monkeypatch.setattr(
        programming.ReadPlan, "of", classmethod(lambda cls, *a, **k: derived.append(1) or real(cls, *a, **k))
    )
    _run(ev, hw, names, seed=2)
    assert derived == []
    _run(ev, {**hw, "read_noise": {"enabled": True}}, ["none"], seed=2)  # another spec: planned anew
    assert derived


def test_a_trials_instance_is_freed_when_the_next_trial_starts(lenet, digits, calib_inputs):
    """With the cyclic collector off, the first trial's instance (and with it every draw and solve of
    the model) is gone once the next trial has run: nothing it drew refers back to it, so reference
    counting frees it. Breakage caught: a reference cycle between the instance and its cells, which
    keeps each trial's draws until a later full collection (several trials of a large model at once)."""
    ev = _evaluator(lenet, digits, calib_inputs, n_test=100)
    names = ["none", "ec", "bi", "row_flip+row_perm"]
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        _run(ev, IR, names, seed=3)
        first = [weakref.ref(xm.instance) for xm in ev._twins.values() if xm.instance is not None]
        assert first and all(r() is not None for r in first)
        _run(ev, IR, names, seed=4)
        assert all(r() is None for r in first)
    finally:
        if enabled:
            gc.enable()


def test_a_full_trial_creates_no_tensor_on_the_default_device(lenet, digits, calib_inputs):
    """With the default device set to ``meta``, any tensor made without an explicit device is a
    meta tensor and the trial fails loudly; model and data are explicitly on the CPU. Every
    non-ideality and the strategies that touch the layer internals run; the results equal a
    normal run. Breakage caught: a factory call without ``device=`` anywhere in a trial."""
    hw = {
        **IR,
        "read_noise": {"enabled": True},
        "rtn": {"enabled": True},
        "column_awgn": {"sigma_lsb": 1.0},
        "variation": {"sigma_rel": 0.1, "sigma_abs_delta_g": 0.3},
        "dac_loading": {"enabled": False},
        "frequency_hz": 1e9,
    }
    names = ["none", "ec", "fpt", "bi", "mmse", "row_flip+row_perm", {"name": "retrain", "iterations": 2}]
    ref = _run(_evaluator(lenet, digits, calib_inputs, 100), hw, names)
    ev = _evaluator(lenet, digits, calib_inputs, 100)
    with torch.device("meta"):
        out = _run(ev, hw, names)
    assert out == ref
    loaded = {**hw, "dac_loading": {"enabled": True}, "input": {"input_bits": 4, "dac_bits": 2}}
    ref = _run(_evaluator(lenet, digits, calib_inputs, 100), loaded, ["none"])
    with torch.device("meta"):
        assert _run(_evaluator(lenet, digits, calib_inputs, 100), loaded, ["none"]) == ref


def test_chunked_solve_is_bitwise_the_unchunked_solve():
    """Chunks bound the memory, never the arithmetic: every chunk size gives the same bits."""
    g = torch.tensor(np.random.default_rng(0).uniform(1 / 3e6, 1 / 3e3, (2, 5, 16, 12)))
    w = TileWires(1.0, 4.6, 50.0, 20.0)
    whole = effective_conductance(g, w, max_bytes=1 << 30)
    per_tile = solve_bytes_per_tile(16, 12)
    for tiles_per_chunk in (1, 3, 7):
        assert torch.equal(effective_conductance(g, w, max_bytes=tiles_per_chunk * per_tile), whole)
    with pytest.raises(SolveBudgetError, match="one 16x12 tile needs"):
        effective_conductance(g, w, max_bytes=per_tile - 1)


def test_float32_solve_is_offered_and_close(lenet):
    g = torch.tensor(np.random.default_rng(1).uniform(1 / 3e6, 1 / 3e3, (4, 32, 32)))
    w = TileWires(1.0, 4.6)
    exact = effective_conductance(g, w)
    f32 = effective_conductance(g, w, dtype=torch.float32)
    err = float(((f32 - exact).abs() / exact.abs().max()).max())
    assert 0 < err < 1e-3


def _spec(tmp_path, **execution) -> str:
    import yaml

    raw = {
        "name": "mem",
        "model": {"name": "resnet18", "train": {"epochs": 1}},
        "data": {"name": "imagefolder", "root": str(tmp_path / "nodata")},
        "hardware": {"ir_drop": {"enabled": True}},
        "trials": 1,
        "execution": execution,
        "output": {"dir": str(tmp_path / "out")},
    }
    for split in ("train", "val"):  # class folders, as preflight checks (the images are never read here)
        (tmp_path / "nodata" / split / "a").mkdir(parents=True)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_a_solve_budget_below_one_tile_is_refused_before_any_work(tmp_path, capsys):
    path = _spec(tmp_path, solve_memory_mb=0.2)
    assert main(["run", path]) == 2
    err = capsys.readouterr().err
    assert "execution.solve_memory_mb" in err and "'layer4.0.conv2' has 1152 tiles" in err and "0.2 MiB" in err
    assert not (tmp_path / "out").exists()
    assert main(["validate", "--preflight", path, "--set", "execution.solve_memory_mb=1"]) == 0
    assert (
        main(["validate", path, "--set", "execution.solve_memory_mb=0.2"]) == 0
    )  # (without --preflight: the spec only)


def test_a_model_that_cannot_fit_a_worker_is_refused(tmp_path, capsys):
    path = _spec(tmp_path)
    args = [
        "--set",
        "model.name=vgg16",
        "--set",
        "hardware.device.bits_per_cell=1",
        "--set",
        "hardware.crossbar.cols=64",
        "--set",
        "hardware.mapping.weight_bits=32",
    ]  # 31 one-bit slices per weight: ~300 GB
    assert main(["validate", "--preflight", path, *args]) == 2
    err = capsys.readouterr().err
    assert "vgg16 needs about" in err and "'classifier.0'" in err and "tiles" in err


def test_moving_the_twin_rebuilds_its_state_on_the_new_device(lenet, digits, calib_inputs):
    """``.to()`` moves parameters and calibration buffers; programmed cells, placed levels and tile
    index tables are derived state, dropped and rebuilt where the layer now lives. Breakage
    caught: a read after a move using tensors left on the old device (or stale ones)."""
    from engine import convert

    hw = HardwareSpec.model_validate({**IR, "ir_drop": {"enabled": False}, "adc": {"bits": 6}})
    xm = convert(lenet, hw)
    xm.calibrate(calib_inputs)
    x = digits.test.tensors[0][:50]
    with torch.no_grad():
        xm.program([4])
        before = xm(x)
        xm.to(torch.device("cpu"))
        assert all(la._prog is None and getattr(la, "_conv_tiles", None) is None for la in xm.crossbar_layers())
        assert all(la.adc_max_abs.device.type == "cpu" and la.delta_x.item() > 0 for la in xm.crossbar_layers())
        xm.program([4])
        assert torch.equal(xm(x), before)


class _AtenRoundTrips(torch.utils._python_dispatch.TorchDispatchMode):
    """The aten ops that make the host wait for a GPU or a GPU for the host: a tensor made from host
    data (a blocking host-to-device copy) and the data-dependent reads (a scalar read, ``nonzero``,
    ``torch.equal``, boolean-mask selection)."""

    COUNTED = (
        "aten::lift_fresh",
        "aten::_local_scalar_dense",
        "aten::is_nonzero",
        "aten::equal",
        "aten::nonzero",
        "aten::masked_select",
    )

    def __init__(self, counts: dict[str, int]) -> None:
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name in self.COUNTED:
            self.counts[func._schema.name] = self.counts.get(func._schema.name, 0) + 1
        return func(*args, **(kwargs or {}))


class _HostReads(torch.overrides.TorchFunctionMode):
    """The Python-level reads of a tensor's values on the host (``tolist`` and ``.cpu()``/``.numpy()``
    copy without an aten op on the CPU, so the dispatch mode alone misses them)."""

    COUNTED = ("tolist", "item", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")

    def __init__(self, counts: dict[str, int]) -> None:
        super().__init__()
        self.counts = counts

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.COUNTED:
            self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


class _HostRoundTrips(contextlib.ExitStack):
    """Counts, by name, what would synchronise a CUDA stream (CPU tensors stand in for the device)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def __enter__(self) -> _HostRoundTrips:
        super().__enter__()
        self.enter_context(_HostReads(self.counts))
        self.enter_context(_AtenRoundTrips(self.counts))
        return self


@pytest.mark.parametrize(
    "hw",
    [
        {"faults": IR["faults"], "variation": IR["variation"], "adc": {"kind": "ideal"}},
        {"faults": IR["faults"], "variation": IR["variation"], "input": {"input_bits": 8, "dac_bits": 1}},
        {"faults": IR["faults"], "variation": IR["variation"], "read_noise": {"enabled": True}, "adc": {"bits": 6}},
        {"faults": IR["faults"], "adc": {"bits": 8, "full_scale_a": 2e-5}, "device": {"bits_per_cell": 2}},
    ],
    ids=["folded", "digitised", "tiled_noisy", "given_adc_range_slices"],
)
def test_programming_an_instance_and_reading_make_no_host_round_trip(lenet, digits, calib_inputs, hw):
    """After calibration, a trial's programming and reads run without the host waiting for the device:
    the calibrated scalars (DAC step, input and ADC signs) are host copies refreshed only when their
    buffers change, and the instance's stream keys are the one host-to-device copy (pinned, not
    blocking, on a GPU). CPU tensors stand in for the device here; the ops counted are the ones that
    synchronise a CUDA stream. Breakage caught: ``float(layer.delta_x)`` or ``bool(layer.x_signed)``
    per programmed layer (3-5 stalls per layer per trial), a host-made shift tensor per stream."""
    from engine import convert

    xm = convert(lenet, HardwareSpec.model_validate(hw))
    xm.calibrate(calib_inputs)
    x = digits.test.tensors[0][:64]
    with torch.no_grad():
        xm.program([1])
        ref = xm(x)  # the first programming after calibration copies the fitted scalars once
        trips = _HostRoundTrips()
        with trips:
            xm.program([2])
            out = xm(x)
    assert trips.counts == {"aten::lift_fresh": 1}, trips.counts
    assert out.shape == ref.shape and not torch.equal(out, ref)  # another instance was read


def test_signs_set_from_the_host_are_written_once_and_never_read_back(lenet):
    """Crossbar training sets the input and ADC signs from its per-batch ranges on every update: a
    buffer is written only when its sign changes, and the host copy follows without a device read.
    Breakage caught: a write per update (the next programming then reads the device back), or a host
    copy that disagrees with the buffer."""
    from engine import convert

    layer = convert(lenet, HardwareSpec.model_validate({"adc": {"bits": 6}})).crossbar_layers()[1]
    before = layer.fitted
    version = layer.x_signed._version
    trips = _HostRoundTrips()
    with trips:
        layer.set_signs(x_signed=before.x_signed)  # unchanged: no write
        assert layer.x_signed._version == version
        layer.set_signs(x_signed=not before.x_signed, adc_signed=not before.adc_signed)
        after = layer.fitted
    assert trips.counts == {}, trips.counts
    assert (after.x_signed, after.adc_signed) == (not before.x_signed, not before.adc_signed)
    layer._fitted = None  # the host copy equals what the buffers now hold
    assert layer.fitted == after


def test_crossbar_training_creates_no_tensor_on_the_default_device():
    """Crossbar training under a ``meta`` default device (model, data and conductances explicitly on the
    CPU): forward and transposed backward reads through the inference read, updates with write noise,
    IR drop with the interpolated FCM, DAC loading and per-read noise. The trained weights equal a
    normal run. Breakage caught: a factory call without ``device=`` in training's programming, reads
    or updates."""
    from torch import nn

    from engine.training import analog_layers, to_analog

    hw = HardwareSpec.model_validate(
        {
            "crossbar": {"rows": 16, "cols": 16},
            "faults": {"stuck_at_gmax_rate": 0.02, "stuck_at_gmin_rate": 0.02},
            "variation": {"sigma_rel": 0.1},
            "ir_drop": {"enabled": True},
            "dac_loading": {"enabled": True},
            "read_noise": {"enabled": True},
            "column_awgn": {"sigma_lsb": 0.5},
            "input": {"dac_bits": 4},
            "update": {"nonlinearity": 0.5, "write_noise": 1.0, "refresh_every": 2},
        }
    )

    def train(meta: bool) -> torch.Tensor:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
        net = to_analog(net, hw, 3, [0.5, 0.5])
        gen = torch.Generator().manual_seed(1)
        batches = [(torch.rand(8, 1, 8, 8, generator=gen), torch.randint(0, 5, (8,), generator=gen)) for _ in range(3)]
        net.train()
        with torch.device("meta") if meta else contextlib.nullcontext():
            for x, y in batches:
                nn.functional.cross_entropy(net(x), y).backward()
                for layer in analog_layers(net):
                    layer.apply_update(0.1)
            net.eval()
            out = net(batches[0][0])
        return torch.cat([torch.cat([la.weight().flatten() for la in analog_layers(net)]), out.flatten()])

    assert torch.equal(train(True), train(False))
