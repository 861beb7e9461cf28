"""Mitigation strategies by name, composable with ``+`` (see :mod:`engine.mitigations.base`).

Components of a composition are written, and applied, in the declared :data:`ORDER`: bit inversion
(a mapping scheme), re-training (it re-programs the instance), row remapping, error correction,
noise-injection adaption (a model variant), drift compensation, sparsity induction (a variant and
its zero-node removal), MMSE denoising, and BN recalibration last (it sees everything else). A
composition written in another order is refused naming it. ``row_flip+row_perm`` becomes one joint
assignment.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from ..catalog import Scheme
from .base import BatchNormStats, Mitigation, Reprogram, TrialContext, Update, Weights
from .basic import BitInversion, ErrorCorrection, NoMitigation
from .drift_comp import DriftCompensation
from .fpt import FreeParameterTuning
from .mmse import MMSEDenoising
from .nia import NoiseInjectionAdaption
from .remap import RowFlipPermutation, RowFlipping, RowPermutation
from .retrain import HardwareAwareRetraining
from .sparsity import SparsityInduction

REGISTRY: dict[str, type[Mitigation]] = {
    cls.name: cls
    for cls in (
        NoMitigation,
        ErrorCorrection,
        BitInversion,
        MMSEDenoising,
        SparsityInduction,
        FreeParameterTuning,
        RowFlipping,
        RowPermutation,
        NoiseInjectionAdaption,
        HardwareAwareRetraining,
        DriftCompensation,
    )
}
ORDER = ("bi", "retrain", "row_flip", "row_perm", "row_flip+row_perm", "ec", "nia", "drift_comp", "si", "mmse", "fpt")
_RANK = {n: i for i, n in enumerate(ORDER)}
assert set(REGISTRY) - {"none"} <= set(ORDER), "every component has its place in ORDER"


@dataclass(frozen=True)
class Strategy:
    """A composition of components, applied in :data:`ORDER`."""

    components: tuple[Mitigation, ...]
    label: str

    @property
    def scheme(self) -> Scheme:
        schemes = {c.scheme for c in self.components} - {"direct"}
        return schemes.pop() if schemes else "direct"

    def _variant_component(self, base_key: str, hw) -> Mitigation | None:
        with_variant = [c for c in self.components if c.variant_key(base_key, hw) is not None]
        return with_variant[0] if with_variant else None

    def variant(self, base_key: str, hw) -> tuple[str | None, Mitigation | None]:
        """(variant key, the component that makes it) - (None, None) for the base model."""
        comp = self._variant_component(base_key, hw)
        return (None, None) if comp is None else (comp.variant_key(base_key, hw), comp)

    def _ordered(self) -> list[Mitigation]:
        """The components in :data:`ORDER` (parse_strategy validated the written order; the joint
        row assignment takes the place of its parts)."""
        return sorted(self.components, key=lambda c: _RANK.get(c.name, -1))

    def prepare(self, xmodel, ctx: TrialContext) -> None:
        for c in self._ordered():
            _apply(xmodel, c.prepare(xmodel, ctx))

    def after_program(self, xmodel, ctx: TrialContext) -> None:
        for c in self._ordered():
            _apply(xmodel, c.after_program(xmodel, ctx))


def _apply(xmodel, update: Update | None) -> None:
    """What a component returned, applied to the twin: new programmed states, BatchNorm statistics,
    float weights or output transforms."""
    if isinstance(update, Reprogram):
        xmodel.program_cells(update.cells)
    elif isinstance(update, BatchNormStats):
        xmodel.load_batchnorm(update.states)
    elif isinstance(update, Weights):
        xmodel.load_weights(update.state)
    elif update:
        xmodel.set_output_stage(update)


def parse_strategy(entry: str | dict) -> Strategy:
    """``"ec"``, ``"bi+ec"``, ``{"name": "retrain", "iterations": 50}`` or
    ``{"name": "bi+si", "si": {"l1": 1e-4}, "label": "yu"}``. Raises ValueError naming the problem."""
    if isinstance(entry, str):
        name, params, label = entry, {}, None
    elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
        params = {k: v for k, v in entry.items() if k not in ("name", "label")}
        name, label = entry["name"], entry.get("label")
    else:
        raise ValueError(f"a mitigation is a name or a mapping with 'name' (got {entry!r})")
    parts = [p.strip() for p in name.split("+")]
    unknown = [p for p in parts if p not in REGISTRY]
    if unknown or not parts:
        raise ValueError(f"unknown mitigation {unknown or name!r}; available: {sorted(REGISTRY)}")
    if len(set(parts)) != len(parts):
        raise ValueError(f"mitigation {name!r} repeats a component")
    if "none" in parts and len(parts) > 1:
        raise ValueError("'none' cannot be composed with other mitigations")
    comps = []
    for p in parts:
        kw = params if len(parts) == 1 else params.get(p, {})
        try:
            comps.append(REGISTRY[p](**kw))
        except ValidationError as e:
            err = e.errors()[0]
            raise ValueError(f"mitigation {p!r}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    extra = set(params) - set(parts) if len(parts) > 1 else set()
    if extra:
        raise ValueError(f"mitigation {name!r}: parameters for unknown components {sorted(extra)}")
    label = label or "+".join(c.label() for c in comps)
    if {"row_flip", "row_perm"} <= set(parts):  # one joint assignment
        comps = [c for c in comps if c.name not in ("row_flip", "row_perm")] + [RowFlipPermutation()]
    variant_makers = [c for c in comps if type(c).variant_key is not Mitigation.variant_key]
    if len({c.scheme for c in comps} - {"direct"}) > 1 or len(variant_makers) > 1:
        raise ValueError(f"mitigation {name!r} combines incompatible mapping schemes or model variants")
    ranks = [_RANK[p] for p in parts if p != "none"]
    if ranks != sorted(ranks):
        written = "+".join(sorted(parts, key=_RANK.__getitem__))
        raise ValueError(
            f"mitigation {name!r}: components are written in the order they are applied, here "
            f"{written!r} (the order: {', '.join(ORDER)})"
        )
    return Strategy(tuple(comps), label)


__all__ = ["ORDER", "REGISTRY", "Mitigation", "Reprogram", "Strategy", "TrialContext", "Weights", "parse_strategy"]
