"""Static draws in one pass (engine.fused_draws): the compiled path gives the eager bits on
every stream layout and shape, a compiled result that differs is caught and dropped, the ``auto``
policy compiles only after its eager budget, the spec field reaches the worker, and programming every
layer in one pass gives the layer-by-layer values."""

from __future__ import annotations

import functools
import math
from dataclasses import replace

import pytest
import torch

from engine import HardwareSpec, convert, fused_draws
from engine import counter_rng as cr
from engine.fused_draws import StreamRequest, draw_streams
from engine.instance import HardwareInstance
from sweep.spec import validate

R = StreamRequest
END = cr.U32_END
FAULTS = {"stuck_at_gmax_rate": 0.0175, "stuck_at_gmin_rate": 0.0904}
ODD = {"crossbar": {"rows": 37, "cols": 29}, "mapping": {"realisation": "offset"}}  # layers of odd cell counts


@pytest.fixture(autouse=True)
def _restore_policy():
    yield
    fused_draws.reset("never")  # the suite's policy (conftest): never depend on when auto switches


@functools.cache
def _compiler_builds() -> bool:
    """Whether Inductor can build anything here (a C++ compiler); without one the eager fallback is the
    expected behaviour and these tests skip. With one, any fallback of the draws is a failure."""
    try:
        return bool(torch.compile(lambda t: t * 3 + 1)(torch.arange(4)).sum() == 22)
    except Exception:
        return False


def _compiled_or_skip() -> None:
    if not _compiler_builds():
        pytest.skip(f"torch.compile cannot build here: {fused_draws.status()['disabled']}")


def _same(a: list[list[torch.Tensor]], b: list[list[torch.Tensor]]) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y) and all(torch.equal(p, q) for p, q in zip(x, y)) for x, y in zip(a, b)
    )


@pytest.mark.parametrize(
    "sizes,instances",
    [([100, 51], 1), ([1, 3, 5, 7], 2), ([4800, 38401, 16384], 1), ([2, 1000, 77], 3)],
    ids=["odd_tail", "tiny_odd", "lenet_like", "three_instances"],
)
def test_compiled_draws_are_the_eager_bits(sizes, instances):
    """Every output of the compiled pass equals the eager draws bit for bit: normals and interval
    indicators (empty, full, lower, upper and inner intervals, the int32 sign boundary included), odd
    segment lengths (padded words), several instances."""
    fused_draws.reset("always")
    requests = [
        R("normal"),
        R("intervals", ((0, 0), (0, END), (0, 2**31), (2**31, END), (12345, 3_000_000_000))),
        R("normal"),
        R("intervals", ((0, 75_161_927), (463_470_690, END))),
    ]
    keys = torch.tensor(cr.stream_keys_signed(list(range(11, 11 + instances)), range(len(sizes)), [1, 0, 4, 5]))
    got = draw_streams(keys, sizes, requests)
    _compiled_or_skip()
    assert fused_draws.status()["compiled"] and fused_draws.status()["disabled"] is None
    want = fused_draws._eager(keys, sizes, requests)
    assert _same(got, want)
    n_cells = sum(n + n % 2 for n in sizes)
    assert got[0][0].shape == (instances, n_cells) and got[1][1].shape == (instances, n_cells)
    # the eager reference is the documented generator: cell c of stream 0 is the c-th 32-bit half-word
    u = cr.uint32(keys[:, 1], sizes)
    assert torch.equal(got[1][2], (u < 2**31).float()) and torch.equal(got[1][4], ((u >= 12345) & (u < 3e9)).float())


def test_a_compiled_result_that_differs_is_dropped_for_the_eager_one(monkeypatch):
    """The first compiled result of a shape is checked against eager: a compiler that got one bit
    wrong (simulated by flipping a bit of its output) turns compilation off with a warning, and the
    caller still gets the eager draws. Breakage caught: trusting the compiler without the check."""
    fused_draws.reset("always")
    requests = [R("normal"), R("intervals", ((0, 2**30),))]
    keys = torch.tensor(cr.stream_keys_signed([5], [0, 1], [1, 0]))
    compile_honestly = fused_draws._compile

    def one_bit_off(*layout):
        honest = compile_honestly(*layout)

        def fused(*args):
            out = list(honest(*args))
            out[0] = out[0].clone()
            out[0].view(torch.int32)[0, 3] ^= 1
            return tuple(out)

        return fused

    monkeypatch.setattr(fused_draws, "_compile", one_bit_off)
    with pytest.warns(RuntimeWarning, match="differ from the eager"):
        got = draw_streams(keys, [64, 9], requests)
    _compiled_or_skip()
    assert _same(got, fused_draws._eager(keys, [64, 9], requests))
    assert not fused_draws.status()["compiled"] and "differ" in fused_draws.status()["disabled"]
    draw_streams(keys, [64, 9], requests)  # stays eager: the broken compiler is not called again
    assert fused_draws._STATE.checked == set()


def test_one_compilation_per_layout_whatever_the_grad_mode():
    """A layout compiles once per process: drawing it again with autograd on or off, or with other
    keys, reuses the compiled stages; another shape compiles its own. Breakage caught: the pass keyed
    by the grad mode or by the keys' values (a compilation per trial)."""
    fused_draws.reset("always")
    requests = [R("normal"), R("intervals", ((0, 2**31), (2**31, 2**32 - 5)))]
    keys = torch.tensor(cr.stream_keys_signed([9], [0, 3], [1, 0]))
    with torch.no_grad():
        first = draw_streams(keys, [70, 33], requests)
    _compiled_or_skip()
    assert fused_draws.status()["compilations"] == 1
    with torch.enable_grad():
        second = draw_streams(keys, [70, 33], requests)
    other = torch.tensor(cr.stream_keys_signed([10], [0, 3], [1, 0]))
    third = draw_streams(other, [70, 33], requests)
    assert fused_draws.status()["compilations"] == 1
    assert _same(first, second) and _same(first, fused_draws._eager(keys, [70, 33], requests))
    assert _same(third, fused_draws._eager(other, [70, 33], requests)) and not _same(first, third)
    draw_streams(keys, [70, 35], requests)
    assert fused_draws.status()["compilations"] == 2


def test_layouts_beyond_the_kept_compiled_passes_draw_eagerly(monkeypatch):
    """A process keeps at most COMPILE_MAX_LAYOUTS compiled passes: a further layout draws eagerly (the
    same bits, no compilation, compilation still on for the kept ones). Breakage caught: a
    compilation for every layout of a long sweep without bound."""
    fused_draws.reset("always")
    monkeypatch.setattr(fused_draws, "COMPILE_MAX_LAYOUTS", 1)
    requests = [R("normal")]
    keys = torch.tensor(cr.stream_keys_signed([2], [0], [1]))
    draw_streams(keys, [40], requests)
    _compiled_or_skip()
    got = draw_streams(keys, [42], requests)
    assert fused_draws.status()["compilations"] == 1 and fused_draws.status()["eager_s"] > 0
    assert _same(got, fused_draws._eager(keys, [42], requests)) and fused_draws.status()["compiled"]


def test_auto_compiles_only_after_its_eager_budget(monkeypatch):
    """``auto`` draws eagerly until the process has spent the budget (one compilation's cost), then
    compiles; ``never`` never does, whatever the time spent."""
    requests = [R("normal")]
    keys = torch.tensor(cr.stream_keys_signed([3], [0], [1]))
    monkeypatch.setattr(fused_draws, "AUTO_COMPILE_AFTER_S", 1e-9)
    fused_draws.reset("never")
    for _ in range(3):
        draw_streams(keys, [1000], requests)
    assert fused_draws.status()["eager_s"] > 0 and not fused_draws.status()["compiled"]
    fused_draws.reset("auto")
    monkeypatch.setattr(fused_draws, "AUTO_COMPILE_AFTER_S", 3600.0)
    first = draw_streams(keys, [1000], requests)
    assert fused_draws.status()["eager_s"] > 0 and not fused_draws.status()["compiled"]
    monkeypatch.setattr(fused_draws, "AUTO_COMPILE_AFTER_S", 1e-9)
    second = draw_streams(keys, [1000], requests)
    _compiled_or_skip()
    assert fused_draws.status()["compiled"] and _same(first, second)


def test_draws_too_large_for_one_fused_pass_stay_eager(monkeypatch):
    """Above COMPILE_MAX_WORDS words per call the draws stay eager (one stream at a time), even with
    ``always``; at or below it they compile."""
    requests = [R("normal"), R("intervals", ((0, 2**20),))]
    keys = torch.tensor(cr.stream_keys_signed([3], [0, 1], [1, 0]))
    fused_draws.reset("always")
    monkeypatch.setattr(fused_draws, "COMPILE_MAX_WORDS", 2 * (500 + 26) - 1)
    draw_streams(keys, [1000, 51], requests)
    assert not fused_draws.status()["compiled"] and fused_draws.status()["eager_s"] > 0
    monkeypatch.setattr(fused_draws, "COMPILE_MAX_WORDS", 2 * (500 + 26))
    draw_streams(keys, [1000, 51], requests)
    _compiled_or_skip()
    assert fused_draws.status()["compiled"]


@pytest.mark.parametrize(
    "hw",
    [
        {"faults": FAULTS, "variation": {"sigma_rel": 0.05}},
        {"faults": FAULTS, "variation": {"sigma_rel": 0.1, "sigma_abs_delta_g": 0.3, "ceiling": "g_max"}},
        {"variation": {"sigma_rel": 0.2, "distribution": "lognormal", "domain": "resistance"}},
        {"faults": {"stuck_at_gmin_rate": 1.0}},
        {"drift": {"model": "pcm"}, "time_s": 3600.0, "faults": FAULTS},
    ],
    ids=["faults_rel", "abs_rel_ceiling", "lognormal_resistance", "all_stuck", "drift"],
)
def test_whole_trials_are_the_same_with_compiled_draws(lenet, digits, calib_inputs, hw):
    """Programming and reading a model with compiled draws gives the outputs of eager draws, bit for
    bit, for every static effect; one instance and two instances (odd cell counts: padded words). A
    single instance with faults and gaussian conductance variation (absolute, relative, ceiling) is
    drawn and programmed in one compiled pass; other effects program eagerly. Breakage caught: a
    programming step that rounds differently compiled (e.g. an eager fused multiply-add)."""
    spec = HardwareSpec.model_validate({**hw, **ODD})
    xm = convert(lenet, spec)
    xm.calibrate(calib_inputs)
    x = digits.test.tensors[0][:50]
    outs: dict[str, list[torch.Tensor]] = {}
    for policy in ("never", "always"):
        fused_draws.reset(policy)
        outs[policy] = []
        with torch.no_grad():
            for seeds in ([4], [5, 6]):
                xm.program(seeds)
                outs[policy].append(xm(x))
    _compiled_or_skip()
    assert fused_draws.status()["compiled"] and fused_draws.status()["disabled"] is None
    fused = "drift" not in hw and "distribution" not in hw.get("variation", {})  # the pass's recipe applies
    assert fused_draws.status()["programmed"] == (1 if fused else 0)
    assert all(torch.equal(a, b) for a, b in zip(outs["never"], outs["always"]))


def test_the_pass_writes_the_folded_kernel_weights_of_the_eager_reads(lenet, digits, calib_inputs):
    """Where a layer's read is folded and sensed differentially from one slice, the compiled pass also
    writes its kernel weight ((I+ - I-) dx dw in the matmul's or convolution's layout): five LeNet-5
    layers on tiles that cut both rows and columns (partial last tiles), the outputs bit for bit those
    of eager draws and reads, also after an output gain is set (the weight is then made again from
    the cells) and for a second trial's instance. Breakage caught: a fold cropped or transposed
    wrongly (the pass's first check drops it for eager, so ``folded`` stays 0), a written weight
    used with another scale or gain."""
    spec = HardwareSpec.model_validate(
        {
            "faults": FAULTS,
            "variation": {"sigma_rel": 0.05},
            "crossbar": {"rows": 40, "cols": 24},
            "adc": {"kind": "ideal"},
        }
    )
    xm = convert(lenet, spec)
    xm.calibrate(calib_inputs)
    layers = xm.crossbar_layers()
    assert any(la.grid.t_r > 1 and la.grid.t_c > 1 and la.grid.k % la.grid.rows for la in layers)
    x = digits.test.tensors[0][:50]
    gain = torch.linspace(0.5, 1.5, layers[-1].grid.n).unsqueeze(0)  # (I, n)
    outs: dict[str, list[torch.Tensor]] = {}
    for policy in ("never", "always"):
        fused_draws.reset(policy)
        outs[policy] = []
        with torch.no_grad():
            for seed in (4, 8):
                xm.program([seed])
                outs[policy].append(xm(x))
            layers[-1].set_output_stage(replace(layers[-1].output_stage, gain=gain))
            outs[policy].append(xm(x))
            layers[-1].set_output_stage(replace(layers[-1].output_stage, gain=None))
    _compiled_or_skip()
    assert fused_draws.status()["folded"] == 2 * len(layers) and fused_draws.status()["disabled"] is None
    assert all(torch.equal(a, b) for a, b in zip(outs["never"], outs["always"]))
    assert not torch.equal(outs["always"][1], outs["always"][2])  # the gain acted


@pytest.mark.parametrize("rows,cols", [(40, 24), (64, 64), (7, 5)])
def test_a_kernel_fold_is_the_layers_own_sensing_and_scaling(lenet, rows, cols):
    """:meth:`KernelFold.weight` (what the compiled pass computes) equals, eagerly and bit for bit in
    values and strides, the kernel weight a layer makes from its programmed cells at its first read
    (sense, crop, dx dw, native layout), for LeNet-5's convolutions and linear layers on several
    tilings. Breakage caught: a fold that transposes, crops or scales unlike the layer."""
    spec = HardwareSpec.model_validate(
        {"faults": FAULTS, "crossbar": {"rows": rows, "cols": cols}, "adc": {"kind": "ideal"}}
    )
    xm = convert(lenet, spec)
    xm.calibrate([torch.rand(8, 1, 28, 28)])
    fused_draws.reset("never")
    xm.program([3])
    for la in xm.crossbar_layers():
        found, state = la.kernel_fold(torch.device("cpu")), la.state
        assert found is not None and found.plan is la.read_plan(state.cells)  # the plan the cells are read with
        want = la.native_weight(state.w_eff, found.scale, None)
        got = found.fold.weight(state.cells.h, torch.tensor(found.scale, dtype=torch.float32))
        assert torch.equal(got, want) and got.stride() == want.stride(), la.name


@pytest.mark.parametrize(
    "hw",
    [
        {"variation": {"sigma_abs_delta_g": 0.5}},
        {"variation": {"sigma_rel": 0.3, "ceiling": "g_max"}},
        {"faults": FAULTS, "variation": {"sigma_abs_s": 2e-7, "ceiling": "g_max"}},
    ],
    ids=["abs_only", "rel_ceiling", "faults_abs_ceiling"],
)
def test_the_fused_programming_recipe_is_the_eager_programming(lenet, hw):
    """Each step of the compiled draw-and-program pass (absolute or relative variation alone, the
    G_max ceiling, faults or none) gives the eager cells and draws bit for bit, and the pass was used
    (status counts it). Breakage caught: a recipe step missing or out of the effects' order."""
    spec = HardwareSpec.model_validate({**hw, **ODD})
    layers = convert(lenet, spec).crossbar_layers()
    items = [(la.layer_index, la.target_levels()) for la in layers]
    got = {}
    for policy in ("never", "always"):
        fused_draws.reset(policy)
        inst = HardwareInstance([21], spec)
        inst.program_all(items)
        got[policy] = [(inst.cells(lv, li).h, dict(inst.cells(lv, li).draws.values)) for li, lv in items]
    _compiled_or_skip()
    assert fused_draws.status()["programmed"] == 1 and fused_draws.status()["disabled"] is None
    for (h0, d0), (h1, d1) in zip(got["never"], got["always"]):
        assert torch.equal(h0, h1) and d0.keys() == d1.keys() and all(torch.equal(d0[k], d1[k]) for k in d0)
    h = got["always"][0][0]
    if "ceiling" in hw.get("variation", {}):  # the ceiling binds somewhere: the step is exercised
        assert float(h.max()) == pytest.approx(spec.device.g_max_s / spec.device.delta_g_s - spec.device.g_min_n)


def test_programming_every_layer_in_one_pass_is_layer_by_layer(lenet):
    """``program_all`` programs all layers of a trial in one pass over their concatenated cells: the
    same values as programming each layer alone (odd cell counts included), kept for the layers'
    own ``cells`` calls. Breakage caught: misaligned padding between layers."""
    spec = HardwareSpec.model_validate(
        {"faults": FAULTS, "variation": {"sigma_rel": 0.1, "sigma_abs_delta_g": 0.2}, **ODD}
    )
    layers = convert(lenet, spec).crossbar_layers()
    items = [(la.layer_index, la.target_levels()) for la in layers]
    assert any(math.prod(lv.shape) % 2 for _, lv in items)  # an odd layer: padding is exercised
    together, alone = HardwareInstance([9], spec), HardwareInstance([9], spec)
    cpu = torch.device("cpu")
    together.prefetch([(li, tuple(lv.shape)) for li, lv in items], cpu)
    alone.prefetch([(li, tuple(lv.shape)) for li, lv in items], cpu)
    together.program_all(items)
    assert together.stats["programs"] == len(items)
    for li, lv in items:
        a, b = together.cells(lv, li), alone.cells(lv, li)
        assert torch.equal(a.h, b.h) and torch.equal(a.faults, b.faults)
    assert together.stats["programs"] == len(items)  # the cells calls found the programmed layers


def test_the_spec_field_sets_the_workers_policy_and_bad_values_are_refused(tmp_path):
    """``execution.compile_draws`` reaches the worker's draws; an unknown value is refused by name."""
    from sweep.worker import TrialWorker

    raw = {
        "name": "policy",
        "model": {"name": "lenet5", "train": {"epochs": 1}},
        "data": {"name": "digits"},
        "trials": 1,
        "output": {"dir": str(tmp_path), "mlflow": {"enabled": False}},
        "execution": {"compile_draws": "always"},
    }
    threads = torch.get_num_threads()
    try:
        TrialWorker(raw, cpus=1, gpus=0)
        assert fused_draws.status()["policy"] == "always"
        TrialWorker({**raw, "execution": {"compile_draws": "never"}}, cpus=1, gpus=0)
        assert fused_draws.status()["policy"] == "never"
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(Exception, match="compile_draws"):
        validate({**raw, "execution": {"compile_draws": "sometimes"}})


def test_the_concatenated_levels_are_kept_only_while_the_models_levels_live():
    """One-pass programming reuses a model's concatenated target levels trial after trial, makes them
    again when a level tensor is written in place, and holds none of a model that is gone."""
    import gc

    from engine import instance

    levels = [torch.ones(2, 1, 1, 1, 3, 3), torch.ones(2, 1, 1, 1, 2, 2)]
    first = instance._flat_levels(levels)
    assert instance._flat_levels(levels) is first and first.shape == (1, 18 + 8)
    levels[1].mul_(3)
    again = instance._flat_levels(levels)
    assert again is not first and torch.equal(again[0, 18:], torch.full((8,), 3.0))
    del levels, first, again
    gc.collect()
    instance._flat_levels([torch.zeros(1, 1, 1, 1, 1, 3)])  # odd: padded to 4
    assert len(instance._FLAT_LEVELS) == 1 and instance._FLAT_LEVELS[0][2].shape == (1, 4)


@pytest.mark.parametrize("folded", [False, True], ids=["tiled_offset", "folded_kernel_weights"])
def test_a_trial_with_compiled_draws_creates_no_tensor_on_the_default_device(lenet, digits, calib_inputs, folded):
    """The compiled path keeps the device discipline: under a ``meta`` default device (model and data on
    the CPU) a trial with compiled draws runs and equals the eager trial, on tiled offset reads and on
    folded reads whose kernel weights the pass writes. Breakage caught: a factory call without
    ``device=`` in the fused pass (its counters, bounds, fold scales or outputs)."""
    from engine.data import loader
    from engine.mitigations import parse_strategy
    from engine.trial import TrialEvaluator

    tiles = {"adc": {"kind": "ideal"}} if folded else ODD
    hw = HardwareSpec.model_validate({"faults": FAULTS, "variation": {"sigma_rel": 0.1}, **tiles})
    test = torch.utils.data.TensorDataset(*(t[:100] for t in digits.test.tensors))
    names = [parse_strategy(n) for n in ("none", "ec", "row_perm")]

    def run(policy: str, meta: bool) -> dict:
        fused_draws.reset(policy)
        ev = TrialEvaluator({None: lenet}, loader(test, 100), calib_inputs, torch.device("cpu"))
        with torch.device("meta" if meta else "cpu"):
            return {o.mitigation: o.metrics for o in ev.run(hw, 7, names)}

    ref = run("never", meta=False)
    got = run("always", meta=True)
    _compiled_or_skip()
    assert fused_draws.status()["compiled"] and got == ref
    assert (fused_draws.status()["folded"] > 0) == folded
