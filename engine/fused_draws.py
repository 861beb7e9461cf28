"""Every static stream of a trial in one integer pass: eager, or compiled where that is exact and pays.

A trial's static draws (:func:`engine.instance.draw_flat`) are K streams of SplitMix64 words
over all layers' cells (:mod:`engine.counter_rng`). Eagerly each stream costs about a dozen tensor
passes over its words before its transform. Everything up to the transforms' floating-point part
is integer arithmetic - the counters, the keyed finaliser, an ``intervals`` stream's comparisons
with its integer bounds, and the integer-to-float conversions Box-Muller starts from
(u1 = float32(hi32 + 1) 2**-32 and float32(lo32 as a signed int32)). Integer operations have one
result on every compiler, so on a CPU ``torch.compile`` (Inductor) may fuse that part of every
stream into a few loops without changing a bit; Box-Muller's log, sqrt, cos and sin stay eager
(:func:`engine.counter_rng.box_muller`, shared by both paths), because a compiled libm rounds them
differently. The first compiled result of each stream layout and shape is checked bit for bit
against the eager one; any difference, or a compiler that cannot build, turns compilation off for the process
with a warning, so results never depend on whether a compiler is present.

Policy (``execution.compile_draws``, :func:`set_policy`): ``never``; ``always`` (compile at the first
draw); ``auto`` (default) compiles once this process has spent :data:`AUTO_COMPILE_AFTER_S` drawing
eagerly, about what one compilation costs - the ski-rental rule, so neither choice costs more than
about twice the better one (a LeNet-5 worker compiles after ~5,000 trials, a ResNet-20 one after
~1,000). GPU draws stay eager in this version (the compiled path is validated on CPUs only), and so
do draws of more than :data:`COMPILE_MAX_WORDS` words per call, which the eager path makes one
stream at a time in less memory.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from . import counter_rng

Policy = Literal["auto", "always", "never"]
AUTO_COMPILE_AFTER_S = 10.0  # ~ one compilation on a 2-core CPU: 2-5 s with Inductor's disk cache warm, 17 s cold
COMPILE_MAX_WORDS = 1 << 25  # above: eager, one stream at a time (the fused pass holds every stream's words at once)
_M32 = 0xFFFF_FFFF


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


@dataclass
class _State:
    policy: Policy = "auto"
    eager_s: float = 0.0  # CPU seconds this process spent in eager draws
    compiled: Any = None  # the torch.compile'd integer pass, made on first use
    checked: set[tuple] = field(default_factory=set)  # stream layouts whose compiled result was checked
    disabled: str | None = None  # why compilation is off for this process


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
    """The process's draw path: policy, eager seconds so far, whether compiled draws are in use."""
    return {
        "policy": _STATE.policy,
        "eager_s": _STATE.eager_s,
        "compiled": bool(_STATE.checked) and _STATE.disabled is None,
        "disabled": _STATE.disabled,
    }


def draw_streams(
    keys: torch.Tensor, sizes: Sequence[int], requests: Sequence[StreamRequest]
) -> list[list[torch.Tensor]]:
    """Per request, its draws for every cell of the segments ``sizes`` (one per layer, each padded to
    an even length, as :func:`engine.counter_rng.words` lays them out): ``[normals]`` or one 0/1
    float32 tensor per interval, each (instances, cells). ``keys``: (instances, streams, segments)."""
    if (
        _compile_now(keys.device)
        and keys.shape[0] * keys.shape[1] * sum((n + 1) // 2 for n in sizes) <= COMPILE_MAX_WORDS
    ):
        try:
            return _compiled(keys, sizes, requests)
        except Exception as err:  # a missing or failing compiler: the eager path gives the same bits
            _disable(f"torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})")
    t0 = time.perf_counter()
    out = _eager(keys, sizes, requests)
    if keys.device.type == "cpu":
        _STATE.eager_s += time.perf_counter() - t0
    return out


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


def _compiled(keys: torch.Tensor, sizes: Sequence[int], requests: Sequence[StreamRequest]) -> list[list[torch.Tensor]]:
    import torch._inductor.config as inductor_config  # loaded with the compiler, only when compiling

    if _STATE.compiled is None:
        _STATE.compiled = torch.compile(_integer_pass)
    n_words = tuple((n + 1) // 2 for n in sizes)
    ctr = counter_rng._counters(max(n_words), keys.device)  # GAMMA (j + 1), read-only
    kinds = tuple(r.kind for r in requests)
    counts = tuple(len(r.bounds) for r in requests)
    bounds = _bounds(tuple(b for r in requests for b in r.bounds), keys.device)
    with inductor_config.patch(compile_threads=1):  # one small kernel: no pool of compile workers
        flat = iter(_STATE.compiled(ctr, keys, n_words, bounds, kinds, counts))
    out = []
    for req in requests:
        if req.kind == "normal":
            u1, lo = next(flat), next(flat)
            out.append([counter_rng.box_muller(u1, lo)])
        else:
            out.append([next(flat) for _ in req.bounds])
    shape = (kinds, counts, keys.device.type, tuple(keys.shape), n_words)
    if shape not in _STATE.checked:  # the first compiled result of each shape, bit for bit against eager
        ref = _eager(keys, sizes, requests)
        if not all(torch.equal(a, b) for xs, ys in zip(out, ref) for a, b in zip(xs, ys)):
            _disable("the compiled draws differ from the eager ones on this machine")
            return ref
        _STATE.checked.add(shape)
    return out


def _mix64(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser (:func:`engine.counter_rng.mix64_`), out of place for the compiler."""
    z = z ^ ((z >> 30) & ((1 << 34) - 1))
    z = z * counter_rng._C1_S
    z = z ^ ((z >> 27) & ((1 << 37) - 1))
    z = z * counter_rng._C2_S
    return z ^ ((z >> 31) & ((1 << 33) - 1))


def _integer_pass(
    ctr: torch.Tensor,
    keys: torch.Tensor,
    n_words: tuple[int, ...],
    bounds: torch.Tensor,
    kinds: tuple[str, ...],
    counts: tuple[int, ...],
) -> tuple[torch.Tensor, ...]:
    """The integer part of :func:`draw_streams` (compiled): word j of segment s and stream k is
    mix64(key_{k,s} + GAMMA (j + 1)) (:func:`engine.counter_rng.words`; ``ctr`` holds GAMMA (j + 1),
    ``keys`` is (I, K, S)); per normal stream (u1, float32(lo32 read as a signed int32)) per word, per
    interval the indicator per cell (cell c: the low half of word c // 2 for even c, the high half for
    odd c). Slices, concatenation and elementwise operations only: Inductor's CPU code for indirect
    indexing and for an int64 ``arange`` was found wrong in torch 2.14 (wrong words, a corrupted heap)."""
    z = torch.cat([ctr[:n] + keys[:, :, s : s + 1] for s, n in enumerate(n_words)], dim=-1)
    w = _mix64(z)
    out: list[torch.Tensor] = []
    b = 0
    for k, (kind, count) in enumerate(zip(kinds, counts)):
        wk = w[:, k]
        if kind == "normal":
            out.append((((wk >> 32) & _M32) + 1).to(torch.float32) * 2.0**-32)
            lo = wk & _M32
            out.append((lo - (lo & (1 << 31)) * 2).to(torch.float32))
        else:
            halves = (wk & _M32, (wk >> 32) & _M32)
            for j in range(count):
                a, e = bounds[b + j, 0], bounds[b + j, 1]
                inside = [((u >= a) & (u < e)).to(torch.float32) for u in halves]
                out.append(torch.stack(inside, dim=-1).reshape(wk.shape[0], -1))
            b += count
    return tuple(out)


@functools.lru_cache(maxsize=32)
def _bounds(bounds: tuple[tuple[int, int], ...], device: torch.device) -> torch.Tensor:
    return torch.tensor(bounds if bounds else [(0, 0)], dtype=torch.int64, device=device).reshape(-1, 2)
