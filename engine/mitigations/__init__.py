"""Mitigation strategies by name, composable with ``+`` (see :mod:`engine.mitigations.base`)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from ..mapping import Scheme
from .base import Mitigation, TrialContext
from .basic import BitInversion, ErrorCorrection, NoMitigation

REGISTRY: dict[str, type[Mitigation]] = {cls.name: cls for cls in (NoMitigation, ErrorCorrection, BitInversion)}


@dataclass(frozen=True)
class Strategy:
    """A composition of components, applied in the order given."""

    components: tuple[Mitigation, ...]
    label: str

    @property
    def scheme(self) -> Scheme:
        schemes = {c.scheme for c in self.components} - {"direct"}
        return schemes.pop() if schemes else "direct"

    @property
    def variant(self) -> str | None:
        variants = {c.variant for c in self.components} - {None}
        return variants.pop() if variants else None

    def after_program(self, xmodel, ctx: TrialContext) -> None:
        for c in self.components:
            c.after_program(xmodel, ctx)


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
            raise ValueError(f"mitigation {p!r}: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from None
    extra = set(params) - set(parts) if len(parts) > 1 else set()
    if extra:
        raise ValueError(f"mitigation {name!r}: parameters for unknown components {sorted(extra)}")
    strategy = Strategy(tuple(comps), label or "+".join(c.label() for c in comps))
    if len({c.scheme for c in comps} - {"direct"}) > 1 or len({c.variant for c in comps} - {None}) > 1:
        raise ValueError(f"mitigation {name!r} combines incompatible mapping schemes or model variants")
    return strategy


__all__ = ["REGISTRY", "Mitigation", "Strategy", "TrialContext", "parse_strategy"]
