"""Every static stream of a trial in one pass: eager, or compiled where that is exact and pays.

A trial's static draws (:func:`engine.instance.draw_flat`) are K streams of SplitMix64 words over
all layers' cells (:mod:`engine.counter_rng`), each turned into normals or interval indicators.
Every step is an integer operation or a correctly rounded float32 +, -, * or / in a fixed order
(:func:`engine.counter_rng.box_muller` makes normals without libm), and those have one result on
every compiler: Inductor compiles C++ with ``-ffp-contract=off`` (no fused multiply-add) and without
unsafe math. So on a CPU Inductor may fuse every stream without changing a bit, where eagerly each
normal stream costs about seventy tensor passes, in two kernels (:func:`_compile`): the 64-bit
hashing (counters, keyed finaliser), then from the words' 32-bit halves Box-Muller, interval
comparisons, cell order and the common programming - and, for layers whose read is a plain folded
one, their kernel weights from the programmed cells (:class:`engine.tiling.KernelFold`: a
subtraction and a product, the layer's own roundings). The first compiled result of each stream
layout, shape and set of folds is still checked bit for bit against the eager one; any difference,
or a compiler that cannot build, turns compilation off for the process with a warning, so results
never depend on whether a compiler is present.

Policy (``execution.compile_draws``, :func:`set_policy`): ``never``; ``always`` (compile at the first
draw); ``auto`` (default) compiles once this process has spent :data:`AUTO_COMPILE_AFTER_S` drawing
eagerly, about what one compilation costs - the ski-rental rule, so neither choice costs more than
about twice the better one. GPU draws stay eager in this version (the compiled path is validated on
CPUs only), and so do draws of more than :data:`COMPILE_MAX_WORDS` words per call, which the eager
path makes one stream at a time in less memory.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from . import counter_rng
from .nonideal.faults import apply_fault_weights_
from .nonideal.variation import bound_, vary_absolute_, vary_relative_
from .tiling import KernelFold

Policy = Literal["auto", "always", "never"]
AUTO_COMPILE_AFTER_S = 10.0  # ~ one compilation on a 2-core CPU: 2-5 s with Inductor's disk cache warm, 17 s cold
COMPILE_MAX_WORDS = 1 << 25  # above: eager, one stream at a time (the fused pass holds every stream's words at once)
COMPILE_MAX_LAYOUTS = 16  # compiled passes a process keeps; a further layout draws eagerly (same bits)


@dataclass(frozen=True)
class StreamRequest:
    """One stream to draw: ``normal`` (Box-Muller normals) or ``intervals`` (0/1 indicators of the
    32-bit draw lying in each half-open interval of ``bounds``)."""

    kind: Literal["normal", "intervals"]
    bounds: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        for a, b in self.bounds:
            if not 0 <= a <= b <= counter_rng.U32_END:
                raise ValueError(f"interval [{a}, {b}) is not within [0, 2**32)")


@dataclass(frozen=True)
class ProgramRecipe:
    """Programming the fused pass may apply to its own draws (the common static effects: stuck-at
    faults, gaussian conductance variation), as indices into the pass's flat outputs (one per normal
    stream, one per interval). With p = (G_min/dG, sigma_rel, sigma_abs/dG, G_max/dG) as a tensor (a
    sweep over sigma reuses the kernel): g = L + p0, then the effects' own steps in
    :func:`engine.instance.program_levels`' order - :func:`~engine.nonideal.variation.vary_relative_`,
    :func:`~engine.nonideal.variation.vary_absolute_`, :func:`~engine.nonideal.variation.bound_`,
    h = g - p0, :func:`~engine.nonideal.faults.apply_fault_weights_` with ``full_level`` = 2**b - 1."""

    rel: int | None
    abs: int | None
    ceiling: bool
    faults: tuple[int, int] | None  # (healthy, at_gmax)
    full_level: int


@dataclass
class _State:
    policy: Policy = "auto"
    eager_s: float = 0.0  # CPU seconds this process spent in eager draws
    compiled: dict[tuple, Any] = field(default_factory=dict)  # per stream layout and shape, its fused pass
    checked: set[tuple] = field(default_factory=set)  # stream layouts whose compiled result was checked
    disabled: str | None = None  # why compilation is off for this process
    programmed: int = 0  # compiled passes that also programmed the cells (draw_and_program)
    folded: int = 0  # kernel weights those passes wrote (draw_and_program's folds)
    compilations: int = 0  # fused passes compiled (one per stream layout, shape and folds)


_STATE = _State()


def set_policy(policy: Policy) -> None:
    """When static draws on a CPU are compiled (module docstring); a worker sets it from its spec."""
    if policy not in ("auto", "always", "never"):
        raise ValueError(f"compile policy must be auto, always or never (got {policy!r})")
    _STATE.policy = policy


def reset(policy: Policy = "auto") -> None:
    """Forget this process's compile state (eager time, checks, a disabling failure) and set ``policy``."""
    global _STATE
    _STATE = _State()
    set_policy(policy)


def status() -> dict[str, Any]:
    """The process's draw path: policy, eager seconds so far, whether compiled draws are in use, how
    many compiled passes also programmed the cells and how many kernel weights they wrote, how many
    passes were compiled."""
    return {
        "policy": _STATE.policy,
        "eager_s": _STATE.eager_s,
        "compiled": bool(_STATE.checked) and _STATE.disabled is None,
        "disabled": _STATE.disabled,
        "programmed": _STATE.programmed,
        "folded": _STATE.folded,
        "compilations": _STATE.compilations,
    }


def draw_streams(
    keys: torch.Tensor, sizes: Sequence[int], requests: Sequence[StreamRequest]
) -> list[list[torch.Tensor]]:
    """Per request, its draws for every cell of the segments ``sizes`` (one per layer, each padded to
    an even length, as :func:`engine.counter_rng.words` lays them out): ``[normals]`` or one 0/1
    float32 tensor per interval, each (instances, cells). ``keys``: (instances, streams, segments)."""
    if compiles(keys.device, _words(keys, sizes)):
        try:
            return _compiled(keys, sizes, requests)[0]
        except _NotCompiled:
            pass
        except Exception as err:  # a missing or failing compiler: the eager path gives the same bits
            _disable(f"compilation failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})")
    t0 = time.perf_counter()
    out = _eager(keys, sizes, requests)
    if keys.device.type == "cpu":
        _STATE.eager_s += time.perf_counter() - t0
    return out


@dataclass(frozen=True)
class Programmed:
    """What :func:`draw_and_program` made: per request its draws (as :func:`draw_streams`), the
    programmed cells h (1, cells), and the kernel weight of each fold asked for, in order."""

    draws: list[list[torch.Tensor]]
    h: torch.Tensor
    weights: list[torch.Tensor]


def draw_and_program(
    keys: torch.Tensor,
    sizes: Sequence[int],
    requests: Sequence[StreamRequest],
    levels: torch.Tensor,
    params: torch.Tensor,
    recipe: ProgramRecipe,
    eager_program: Callable[[list[list[torch.Tensor]]], torch.Tensor],
    folds: Sequence[tuple[int, KernelFold, float]] = (),
) -> Programmed | None:
    """:func:`draw_streams` and the programmed cells h = ``recipe`` applied to target ``levels`` (1,
    cells) with ``params`` (float32, 4), in one compiled pass; None where this call is not compiled
    (policy, device, size, a failed compiler): the caller then draws and programs eagerly.
    ``eager_program(draws)`` is the engine's eager programming, the reference of the first check.
    ``folds``: (segment, fold, dx dw scale) of layers whose folded kernel weight the pass also writes
    from its cells (:meth:`engine.tiling.KernelFold.weight`), saving each a sensing and a scaling
    pass of its own at its first read."""
    if not compiles(keys.device, _words(keys, sizes)):
        return None
    spec = tuple((seg, fold) for seg, fold, _ in folds)
    scales = _scales(tuple(float(scale) for _, _, scale in folds), keys.device) if folds else None
    try:
        draws, h, weights = _compiled(keys, sizes, requests, (levels, params, recipe, eager_program, spec, scales))
    except _NotCompiled:
        return None
    except Exception as err:  # a missing or failing compiler: the eager path gives the same bits
        _disable(f"compilation failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})")
        return None
    assert h is not None
    if _STATE.disabled is None:
        _STATE.programmed += 1
        _STATE.folded += len(weights)
    return Programmed(draws, h, weights)


def compiles(device: torch.device, words: int) -> bool:
    """Whether a call drawing ``words`` SplitMix64 words (instances x streams x words per stream) on
    ``device`` runs compiled now (policy, device, size): callers skip preparing a compiled call otherwise."""
    return _compile_now(device) and words <= COMPILE_MAX_WORDS


def _words(keys: torch.Tensor, sizes: Sequence[int]) -> int:
    return keys.shape[0] * keys.shape[1] * sum((n + 1) // 2 for n in sizes)


def _compile_now(device: torch.device) -> bool:
    if device.type != "cpu" or _STATE.disabled is not None or _STATE.policy == "never":
        return False
    return _STATE.policy == "always" or _STATE.eager_s >= AUTO_COMPILE_AFTER_S


def _disable(reason: str) -> None:
    _STATE.disabled = reason
    warnings.warn(f"static draws stay eager in this process: {reason}", RuntimeWarning, stacklevel=3)


def _eager(keys: torch.Tensor, sizes: Sequence[int], requests: Sequence[StreamRequest]) -> list[list[torch.Tensor]]:
    out = []
    for k, req in enumerate(requests):
        if req.kind == "normal":
            out.append([counter_rng.normal(keys[:, k], list(sizes))])
        else:
            out.append(counter_rng.indicators(counter_rng.bits32(keys[:, k], list(sizes)), req.bounds))
    return out


class _NotCompiled(Exception):
    """This call draws eagerly: the process keeps :data:`COMPILE_MAX_LAYOUTS` compiled passes already."""


_Program = tuple[
    torch.Tensor,
    torch.Tensor,
    ProgramRecipe,
    Callable[[list[list[torch.Tensor]]], torch.Tensor],
    tuple[tuple[int, KernelFold], ...],
    "torch.Tensor | None",
]


def _compiled(
    keys: torch.Tensor, sizes: Sequence[int], requests: Sequence[StreamRequest], program: _Program | None = None
) -> tuple[list[list[torch.Tensor]], torch.Tensor | None, list[torch.Tensor]]:
    """The compiled pass: the draws, the programmed cells and the folds' kernel weights where
    ``program`` is given; the eager values (and compilation off) where the first result of this
    layout and shape differs from them."""
    n_words = tuple((n + 1) // 2 for n in sizes)
    ctr = counter_rng._counters(max(n_words), keys.device)  # GAMMA (j + 1), read-only
    kinds = tuple(r.kind for r in requests)
    counts = tuple(len(r.bounds) for r in requests)
    bounds = _bounds(tuple(b for r in requests for b in r.bounds), keys.device)
    levels, params, recipe, eager_program, folds, scales = (
        program if program is not None else (None, None, None, None, (), None)
    )
    shape = (kinds, counts, keys.device.type, tuple(keys.shape), n_words, recipe, folds)
    inputs = [t for t in (levels, params, scales) if t is not None]
    fn = _STATE.compiled.get(shape)
    if fn is not None and shape in _STATE.checked:  # compiled and checked: just call it
        flat = list(fn(ctr, keys, bounds, *inputs))
    elif shape not in _STATE.compiled and len(_STATE.compiled) >= COMPILE_MAX_LAYOUTS:
        raise _NotCompiled(f"{COMPILE_MAX_LAYOUTS} layouts compiled already")
    else:  # a new layout or shape compiles (Inductor's config is loaded with the compiler, only now)
        import torch._inductor.config as inductor_config

        fn = _STATE.compiled[shape] = _compile(n_words, kinds, counts, recipe, folds)
        _STATE.compilations += 1
        with inductor_config.patch(compile_threads=1):  # one small kernel: no pool of compile workers
            flat = list(fn(ctr, keys, bounds, *inputs))
    weights = flat[len(flat) - len(folds) :]
    del flat[len(flat) - len(folds) :]
    h = flat.pop() if recipe is not None else None
    it = iter(flat)
    out = [[next(it) for _ in (req.bounds if req.kind == "intervals" else (None,))] for req in requests]
    if shape not in _STATE.checked:  # the first compiled result of each shape, bit for bit against eager
        ref = _eager(keys, sizes, requests)
        ref_h = eager_program(ref) if eager_program is not None else None
        ref_w = [] if ref_h is None or scales is None else _fold_all(ref_h, n_words, folds, scales)
        same = all(torch.equal(a, b) for xs, ys in zip(out, ref) for a, b in zip(xs, ys))
        same = same and all(torch.equal(a, b) and a.stride() == b.stride() for a, b in zip(weights, ref_w))
        if not same or (h is not None and not (ref_h is not None and torch.equal(h, ref_h))):
            _disable("the compiled draws (or programming) differ from the eager ones on this machine")
            return ref, ref_h, ref_w
        _STATE.checked.add(shape)
    return out, h, weights


def _compile(
    n_words: tuple[int, ...],
    kinds: tuple[str, ...],
    counts: tuple[int, ...],
    recipe: ProgramRecipe | None,
    folds: tuple[tuple[int, KernelFold], ...],
) -> Callable[..., list[torch.Tensor]]:
    """The fused pass of one stream layout, shape and folds, ``(ctr, keys, bounds, [levels, params],
    [scales]) -> outputs``: its integer stage, then its float stage, each traced to an ATen graph
    (``make_fx``) and compiled by Inductor at the first call, then called directly. The pass is
    keyed by everything its graphs specialise on (:func:`_compiled`), so no Dynamo frame evaluation
    or guard check runs per trial (~85 us of LeNet-5's ~0.69 ms pass, measured), and a layout
    compiles once per process whatever the caller's grad mode (traced without autograd: draws are
    constants). On an AVX2 CPU the integer stage is compiled to scalar loops: Inductor's AVX2 vectors
    of int64 load, store, multiply and convert element by element (measured on the 2-core EPYC: an
    int64 ``x + 1`` over 147k elements, 2 threads, 143 us vectorised against 84 us scalar; two
    int64 -> float32 conversions and an add over 74k, one thread, 254 us against 94 us); the float
    stage stays vectorised (scalar, Box-Muller's float arithmetic took twice as long)."""
    scalar = torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "AVX2")

    def integer(ctr: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return _integer_stage(ctr, keys, n_words, kinds)

    def floating(bounds: torch.Tensor, *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        levels, params = (rest[0], rest[1]) if recipe is not None else (None, None)
        scales = rest[2] if folds else None
        parts = rest[(2 if recipe is not None else 0) + (1 if folds else 0) :]
        out = _float_stage(parts, bounds, levels, params, kinds, counts, recipe)
        if folds:
            assert scales is not None
            out = out + tuple(_fold_all(out[-1], n_words, folds, scales))
        return out

    stages: list[Callable[..., Any]] = []

    def fused(ctr: torch.Tensor, keys: torch.Tensor, bounds: torch.Tensor, *inputs: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            if not stages:
                stages.append(_inductor(integer, [ctr, keys], {"cpp.simdlen": 1} if scalar else None))
                parts = list(stages[0](ctr, keys))
                stages.append(_inductor(floating, [bounds, *inputs, *parts], None))
            return list(stages[1](bounds, *inputs, *stages[0](ctr, keys)))

    return fused


def _inductor(fn: Callable[..., Any], inputs: list[torch.Tensor], options: dict[str, Any] | None) -> Callable[..., Any]:
    """``fn`` traced on ``inputs`` to an ATen graph and compiled by Inductor, under a tracing context
    with a fake mode and shape environment as Dynamo would give it: Inductor's FX graph cache keys
    and reuses compiled graphs only there (without one a warm process compiled LeNet-5's pass in
    7.7 s instead of ~2-3 s)."""
    from torch._guards import TracingContext, tracing
    from torch._inductor import compile as inductor_compile
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    graph = make_fx(fn, tracing_mode="fake")(*inputs)  # traced on fake tensors: no eager run of the pass
    example: list[torch.Tensor | int | torch.SymInt | None] = [*inputs]
    with tracing(TracingContext(FakeTensorMode(shape_env=ShapeEnv()))):
        return inductor_compile(graph, example, options)


def _fold_all(
    h: torch.Tensor, n_words: tuple[int, ...], folds: tuple[tuple[int, KernelFold], ...], scales: torch.Tensor
) -> list[torch.Tensor]:
    """Each fold's kernel weight from the flat programmed cells h (1, cells): segment s starts after
    the earlier segments' cells, each padded to an even count (two words' halves)."""
    starts = [2 * sum(n_words[:s]) for s in range(len(n_words))]
    out = []
    for j, (seg, fold) in enumerate(folds):
        n = math.prod(fold.grid.cell_shape)
        out.append(fold.weight(h[:, starts[seg] : starts[seg] + n], scales[j]))
    return out


@functools.lru_cache(maxsize=16)
def _scales(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """The folds' dx dw as float32 (the rounding a float32 tensor times a Python float applies), a
    tensor so a new calibration reuses the compiled pass."""
    return torch.tensor(values, dtype=torch.float32, device=device)


def _mix64(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser (:func:`engine.counter_rng.mix64_`), out of place for the compiler."""
    z = z ^ ((z >> 30) & ((1 << 34) - 1))
    z = z * counter_rng._C1_S
    z = z ^ ((z >> 27) & ((1 << 37) - 1))
    z = z * counter_rng._C2_S
    return z ^ ((z >> 31) & ((1 << 33) - 1))


def _integer_stage(
    ctr: torch.Tensor, keys: torch.Tensor, n_words: tuple[int, ...], kinds: tuple[str, ...]
) -> tuple[torch.Tensor, ...]:
    """The fused pass's 64-bit work (compiled): word j of segment s and stream k is
    mix64(key_{k,s} + GAMMA (j + 1)) (:func:`engine.counter_rng.words`; ``ctr`` holds GAMMA (j + 1),
    ``keys`` is (I, K, S)). Per normal stream the words' low and high 32-bit halves, per interval
    stream the words' int32 view (cell c: the low half of word c // 2 for even c, the high half for
    odd c), each as float32 of the same bits: the float stage then loads floats (Inductor's AVX2 int32
    loads also go element by element) and views them back. Slices, concatenation and elementwise
    operations only: Inductor's CPU code for indirect indexing and for an int64 ``arange`` was found
    wrong in torch 2.14 (wrong words, a corrupted heap)."""
    z = torch.cat([ctr[:n] + keys[:, :, s : s + 1] for s, n in enumerate(n_words)], dim=-1)
    w = _mix64(z)
    out: list[torch.Tensor] = []
    for k, kind in enumerate(kinds):
        wk = w[:, k]
        if kind == "normal":
            out += [wk.to(torch.int32).view(torch.float32), (wk >> 32).to(torch.int32).view(torch.float32)]
        else:
            out.append(wk.view(torch.float32))
    return tuple(out)


def _float_stage(
    parts: tuple[torch.Tensor, ...],
    bounds: torch.Tensor,
    levels: torch.Tensor | None,
    params: torch.Tensor | None,
    kinds: tuple[str, ...],
    counts: tuple[int, ...],
    recipe: ProgramRecipe | None,
) -> tuple[torch.Tensor, ...]:
    """The fused pass's 32-bit and float work (compiled), from :func:`_integer_stage`'s bits: per normal
    stream its normals (:func:`engine.counter_rng.box_muller_from`), per interval the indicator per
    cell. ``bounds``: (intervals, 2) int32, each interval [a, b) as the inclusive range
    [a - 2**31, b - 1 - 2**31] of ``u32 - 2**31`` (:func:`_bounds`). Then the programmed cells where
    ``recipe`` is given (:func:`_program`)."""
    i32 = torch.int32
    it = iter(parts)
    out: list[torch.Tensor] = []
    b = 0
    for kind, count in zip(kinds, counts):
        if kind == "normal":
            lo, hi = next(it).view(i32), next(it).view(i32)
            out.append(counter_rng.box_muller_from(lo, hi))
        else:
            shifted = next(it).view(i32) ^ -(2**31)  # u32 - 2**31 as a signed int32: same order
            for j in range(count):
                out.append(((shifted >= bounds[b + j, 0]) & (shifted <= bounds[b + j, 1])).to(torch.float32))
            b += count
    if recipe is not None and levels is not None and params is not None:
        out.append(_program(out, levels, params, recipe))
    return tuple(out)


def _program(draws: list[torch.Tensor], levels: torch.Tensor, p: torch.Tensor, recipe: ProgramRecipe) -> torch.Tensor:
    """The programmed cells of :class:`ProgramRecipe` (compiled with the draws)."""
    g = levels + p[0]
    if recipe.rel is not None:
        vary_relative_(g, draws[recipe.rel], p[1])
    if recipe.abs is not None:
        vary_absolute_(g, draws[recipe.abs], p[2])
    h = bound_(g, p[3] if recipe.ceiling else None).sub_(p[0])
    if recipe.faults is not None:
        healthy, at_gmax = recipe.faults
        apply_fault_weights_(h, draws[healthy], draws[at_gmax], recipe.full_level)
    return h


@functools.lru_cache(maxsize=32)
def _bounds(bounds: tuple[tuple[int, int], ...], device: torch.device) -> torch.Tensor:
    """Half-open intervals [a, b) of u32 as inclusive int32 ranges of u32 - 2**31 (an empty one as
    [2**31 - 1, -2**31], which nothing lies in): the compiled pass compares 32-bit values, not 64."""
    ranges = [(2**31 - 1, -(2**31)) if a == b else (a - 2**31, b - 1 - 2**31) for a, b in bounds]
    return torch.tensor(ranges if ranges else [(0, 0)], dtype=torch.int32, device=device).reshape(-1, 2)
