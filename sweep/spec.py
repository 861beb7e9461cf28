"""The sweep spec: YAML, validated by pydantic before any Ray work starts.

Sections: ``name``, ``seed``, ``model``, ``data``, ``hardware`` (:class:`engine.HardwareSpec`),
``mitigations``, ``sweep`` (grid and zipped axes over dotted paths), ``trials``, ``execution``,
``output``. Unknown keys are rejected everywhere; every error names the field and the allowed
range. ``--set dotted.path=value`` overrides are applied to the YAML before validation.
"""

from __future__ import annotations

import copy
import os
import re
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine import DATASETS, MODEL_NAMES, HardwareSpec, check_write_granularity, parse_strategy, unused_fields

from .errors import SpecError

SWEEPABLE_ROOTS = ("hardware", "model", "data")


class _Section(BaseModel):
    """Unknown keys are errors; NaN and infinities are refused in every number (not reported as range errors)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TrainRecipe(_Section):
    """Trained once per sweep and cached by content hash under ``<output>/models``."""

    epochs: int = Field(20, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, le=1 << 16)
    lr: float = Field(2e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    l1: float = Field(0.0, ge=0)
    seed: int = Field(0, ge=0)


if TYPE_CHECKING:  # the choices are built from the catalog at run time; to a type checker they are names
    ModelName = str
    DatasetName = str
else:
    ModelName = Literal[tuple(MODEL_NAMES)]
    DatasetName = Literal[tuple(DATASETS)]


class ModelSection(_Section):
    name: ModelName = "lenet5"
    checkpoint: str | None = Field(None, description="xbar-sweep checkpoint or a plain state dict")
    train: TrainRecipe | None = None
    keep_digital: list[str] = Field(default_factory=list, description="layer names ('first', 'last') kept in float")

    @model_validator(mode="after")
    def _source(self) -> ModelSection:
        if self.checkpoint is not None and self.train is not None:
            raise ValueError("model: give either 'checkpoint' (a file) or 'train' (a recipe), not both")
        if self.checkpoint is not None and not os.path.isfile(self.checkpoint):
            raise ValueError(f"model.checkpoint: file not found: {self.checkpoint!r}")
        return self


class CrossbarTraining(_Section):
    """``kind: train`` trials: the network is trained from scratch on the sampled crossbar instance
    (engine.training, TxSim) with SGD; the initial weights and batch order come from ``seed``."""

    epochs: int = Field(8, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, le=1 << 16)
    lr: float = Field(0.05, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1, description="digital momentum accumulator; 0 = TxSim's plain SGD")
    seed: int = Field(0, ge=0)


class DataSection(_Section):
    name: DatasetName = "digits"
    root: str | None = None
    download: bool = Field(
        False,
        description="fetch MNIST / CIFAR-10 / CIFAR-100 into root with torchvision's own "
        "download when its files are missing (before any cluster work); nothing is fetched otherwise",
    )
    input_size: int | None = Field(None, ge=8, le=4096)
    eval_size: int | None = Field(None, ge=1, description="evaluation subset size (default: whole test split)")
    calibration_size: int = Field(1024, ge=1, description="unlabeled training samples for ADC/DAC ranges and FPT")

    @model_validator(mode="after")
    def _download(self) -> DataSection:
        if self.download and self.name not in DOWNLOADABLE:
            raise ValueError(
                f"data.download: only for {', '.join(DOWNLOADABLE)} (got data.name {self.name!r}, "
                "which is bundled or user-provided)"
            )
        if self.download and not self.root:
            raise ValueError("data.download: needs data.root, the directory to download into")
        return self


DOWNLOADABLE = ("mnist", "cifar10", "cifar100")


class UntilRule(_Section):
    """Adaptive stopping (see sweep.adaptive): add instances per point in rounds until the 95 %
    t-interval half-width of ``metric``'s mean is <= ``ci_halfwidth`` for every mitigation."""

    metric: Literal["top1", "top5", "loss"] = "top1"
    ci_halfwidth: float = Field(..., gt=0, le=100)
    min: int = Field(20, ge=2, le=10_000_000)
    max: int = Field(1000, ge=2, le=10_000_000)

    @model_validator(mode="after")
    def _range(self) -> UntilRule:
        if self.min > self.max:
            raise ValueError(f"trials.until: min must be <= max (got min={self.min}, max={self.max})")
        return self


class TrialsSection(_Section):
    instances: int | None = Field(None, ge=1, le=10_000_000, description="hardware instances per sweep point")
    until: UntilRule | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"instances": data} if isinstance(data, int) and not isinstance(data, bool) else data

    @model_validator(mode="after")
    def _one(self) -> TrialsSection:
        if (self.instances is None) == (self.until is None):
            raise ValueError("trials: give either instances (a fixed count) or until (adaptive stopping)")
        return self

    @property
    def max_instances(self) -> int:
        if self.until is not None:
            return self.until.max
        assert self.instances is not None  # the validator requires one of them
        return self.instances


class ExecutionSection(_Section):
    workers: int = Field(2, ge=1, le=100_000)
    cpus_per_worker: float = Field(1.0, gt=0, le=1024)
    gpus_per_worker: float = Field(0.0, ge=0, le=64, description="fractions allowed, e.g. 0.25")
    batch_size: int = Field(540, ge=1, le=1 << 20, description="evaluation batch size (fixes read-noise draws)")
    trials_per_task: int = Field(4, ge=1, le=100_000)
    max_in_flight: int | None = Field(None, ge=1, description="tasks in flight (default 2 x workers)")
    max_task_failures: int = Field(3, ge=0, le=1000, description="re-runs of a task whose worker died")
    compile_draws: Literal["auto", "always", "never"] = Field(
        "auto",
        description="compile each CPU worker's static draws (and the programming of faults and gaussian "
        "variation, and plainly folded layers' kernel weights) with Inductor (checked bit for bit against "
        "eager, same results either way): "
        "auto = once a worker has spent 10 s drawing eagerly; always; never",
    )
    solve_memory_mb: float | None = Field(
        None,
        gt=0,
        le=1 << 30,
        description="working memory of one exact IR-drop solve, MiB (tiles are solved in "
        "chunks that fit); default: a quarter of the worker device's free memory",
    )

    @property
    def in_flight(self) -> int:
        return self.max_in_flight or 2 * self.workers


class MlflowSection(_Section):
    enabled: bool = True
    tracking_uri: str | None = Field(None, description="default sqlite:///<output>/mlflow.db")
    experiment: str | None = Field(None, description="default: the sweep name")


class OutputSection(_Section):
    dir: str = Field(..., min_length=1, description="directory or pyarrow filesystem URI")
    mlflow: MlflowSection = Field(default_factory=MlflowSection)
    flush_rows: int = Field(512, ge=1, description="rows per Parquet part file (at most)")
    flush_seconds: float = Field(5.0, gt=0, description="a part file at least this often while rows arrive")


class SweepAxes(_Section):
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    zip: list[dict[str, list[Any]]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _axes(self) -> SweepAxes:
        seen: set[str] = set()
        groups = [("grid", {k: v}) for k, v in self.grid.items()] + [(f"zip[{i}]", g) for i, g in enumerate(self.zip)]
        for where, group in groups:
            if not group:
                raise ValueError(f"sweep.{where}: a zipped group needs at least one axis")
            lengths = {k: len(v) for k, v in group.items()}
            for path, n in lengths.items():
                if n == 0:
                    raise ValueError(f"sweep.{where}[{path!r}]: an axis needs at least one value")
                if path.split(".")[0] not in SWEEPABLE_ROOTS or not re.fullmatch(
                    r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+", path
                ):
                    raise ValueError(f"sweep.{where}[{path!r}]: axes are dotted paths under {list(SWEEPABLE_ROOTS)}")
                if path in seen:
                    raise ValueError(f"sweep: axis {path!r} appears twice")
                seen.add(path)
            if len(set(lengths.values())) > 1:
                raise ValueError(f"sweep.{where}: zipped axes need equal lengths (got {lengths})")
        return self

    def axes(self) -> list[str]:
        return list(self.grid) + [p for g in self.zip for p in g]


class SweepSpec(_Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    seed: int = Field(0, ge=0, le=2**63 - 1)
    kind: Literal["inference", "train"] = Field(
        "inference", description="evaluate trained networks, or train on the crossbar"
    )
    model: ModelSection
    training: CrossbarTraining | None = None
    data: DataSection = Field(default_factory=DataSection)
    hardware: HardwareSpec = Field(default_factory=HardwareSpec)
    mitigations: list[str | dict[str, Any]] = Field(
        default_factory=lambda: list[str | dict[str, Any]](["none"]), min_length=1
    )
    sweep: SweepAxes = Field(default_factory=SweepAxes)
    trials: TrialsSection
    execution: ExecutionSection = Field(default_factory=ExecutionSection)
    output: OutputSection

    @field_validator("mitigations")
    @classmethod
    def _strategies(cls, v: list) -> list:
        labels = []
        for i, entry in enumerate(v):
            try:
                labels.append(parse_strategy(entry).label)
            except ValueError as e:
                raise ValueError(f"mitigations[{i}]: {e}") from None
        if len(set(labels)) != len(labels):
            raise ValueError(f"mitigations: labels must be unique (got {labels})")
        return v

    @model_validator(mode="after")
    def _kind(self) -> SweepSpec:
        if self.kind == "inference":
            if (self.model.checkpoint is None) == (self.model.train is None):
                raise ValueError("model: give exactly one of 'checkpoint' (a file) or 'train' (a recipe)")
            if self.training is not None:
                raise ValueError("training: only for kind: train")
        else:
            if self.training is None:
                raise ValueError("training: kind: train needs a training section (epochs, batch_size, lr, ...)")
            if self.mitigations != ["none"]:
                raise ValueError("mitigations: training trials have none (leave the default)")
            check_write_granularity(self.hardware, self.training.momentum)
        unused = unused_fields(self.hardware, self.kind)
        if unused:
            raise ValueError(
                "; ".join(f"hardware.{name}: {why} (remove it, or set kind accordingly)" for name, why in unused)
            )
        return self

    def strategies(self):
        return [parse_strategy(m) for m in self.mitigations]

    @property
    def labels(self) -> tuple[str, ...]:
        """Row labels per trial: the mitigation labels, or ``train`` for training trials."""
        return ("train",) if self.kind == "train" else tuple(s.label for s in self.strategies())


# Loading ------------------------------------------------------------------------------------
def _format(err: ValidationError, prefix: str = "") -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = e["msg"].removeprefix("Value error, ")
        named = not loc or msg.startswith(loc)  # the message names its field already: say it once
        lines.append(f"{prefix}{msg}" if named else f"{prefix}{loc}: {msg}")
    return "\n".join(lines)


def set_path(data: dict, path: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, creating missing levels."""
    keys = path.split(".")
    node = data
    for k in keys[:-1]:
        nxt = node.get(k)
        if nxt is None:
            nxt = node[k] = {}
        elif not isinstance(nxt, dict):
            raise SpecError(f"{path}: {k!r} is not a section")
        node = nxt
    node[keys[-1]] = value


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """``dotted.path=value`` with the value parsed as YAML (numbers, lists, booleans)."""
    out = []
    for item in items:
        path, sep, raw = item.partition("=")
        if not sep or not path.strip():
            raise SpecError(f"--set expects dotted.path=value (got {item!r})")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise SpecError(f"--set {path.strip()}: the value {raw!r} is not valid YAML ({e.problem or e})") from None
        out.append((path.strip(), value))
    return out


def validate(raw: dict) -> SweepSpec:
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(_format(e)) from None


def load_raw(path: str, overrides: list[str] | None = None) -> dict:
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except OSError as e:
        raise SpecError(f"cannot read spec {path!r}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec is a YAML mapping")
    raw = copy.deepcopy(raw)
    for p, v in parse_overrides(overrides or []):
        set_path(raw, p, v)
    return raw


def load_spec(path: str, overrides: list[str] | None = None) -> tuple[SweepSpec, dict]:
    """(validated spec, raw dict after overrides). Raises :class:`SpecError`."""
    raw = load_raw(path, overrides)
    return validate(raw), raw


def resolve_point(raw: dict, values: dict[str, Any]) -> SweepSpec:
    """The spec of one sweep point: axis values written into the raw spec, then validated."""
    point = copy.deepcopy(raw)
    for p, v in values.items():
        set_path(point, p, v)
    try:
        return SweepSpec.model_validate(point)
    except ValidationError as e:
        shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
        raise SpecError(f"sweep point ({shown}):\n" + _format(e, "  ")) from None
