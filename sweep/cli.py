"""``xbar-sweep`` command line: run, validate, mlflow-sync, train.

Exit status: 0 success, 2 a spec or argument the sweep refuses (nothing written, no Ray work
started), 1 a failure while running.
"""

from __future__ import annotations

import argparse
import os
import sys

from rich.console import Console
from rich.text import Text

console = Console()
if not console.is_terminal:  # logs and CI: wide enough for the summary table
    console = Console(width=160)
err_console = Console(stderr=True, soft_wrap=True)  # one message per line: greppable in logs


def _load(args: argparse.Namespace):
    from .spec import load_spec, set_path

    if args.resume:
        if args.spec:
            raise SystemExit(_fail("give either SPEC or --resume DIR, not both"))
        spec_path = os.path.join(args.resume, "spec.yaml")
        if not os.path.isfile(spec_path):
            from .spec import SpecError

            raise SpecError(f"--resume {args.resume!r}: no spec.yaml (not a sweep output)")
        spec, raw = load_spec(spec_path, args.set)
        raw = dict(raw)
        set_path(raw, "output.dir", args.resume)
        return load_spec_from_raw(raw)
    if not args.spec:
        raise SystemExit(_fail("give a SPEC file or --resume DIR"))
    return load_spec(args.spec, args.set)


def load_spec_from_raw(raw: dict):
    from .spec import validate

    return validate(raw), raw


def _fail(msg: str) -> int:
    err_console.print(Text.assemble(("error: ", "bold red"), msg))
    return 2


def _validate(args: argparse.Namespace) -> int:
    from .plan import make_plan

    spec, raw = _load(args)
    plan = make_plan(spec, raw, check=args.preflight)
    if args.preflight:  # what `run` checks before it writes anything (needs torch: a few seconds more)
        from .execution import check_local_resources
        from .preflight import preflight

        preflight(spec, fetch=False)
        check_local_resources(spec.execution)
    console.print(f"{spec.name}: {plan.describe()}")
    from engine import changed_values  # the resolved hardware (presets filled in), not the defaults

    resolved = [f"{name}={value!r}" for name, value in changed_values(spec.hardware).items()]
    preset = ((raw.get("hardware") or {}).get("device") or {}).get("preset")
    console.print(f"  hardware{f' (preset {preset})' if preset else ''}: " + (", ".join(resolved) or "defaults"))
    for p in plan.points[: args.show]:
        console.print(
            f"  point {p.index} ({p.id}): " + (", ".join(f"{k}={v!r}" for k, v in p.params.items()) or "(no axes)")
        )
    if len(plan.points) > args.show:
        console.print(f"  ... {len(plan.points) - args.show} more points")
    console.print(f"  mitigations: {', '.join(plan.labels)}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from .console import say
    from .driver import run_sweep
    from .interrupts import stop_signals_raise

    spec, raw = _load(args)
    with stop_signals_raise():  # Ctrl-C / SIGTERM: one line and exit 130 / 143, rows kept
        outcome = run_sweep(spec, raw, force=args.force, console=console)
    state = "complete" if outcome.complete else "INCOMPLETE"
    say(
        console,
        f"{state}: {outcome.rows_present}/{outcome.rows_total} rows in {spec.output.dir} "
        f"({outcome.rows_written} written by this run)",
    )
    return 0 if outcome.complete else 1


def _sync(args: argparse.Namespace) -> int:
    from .driver import sync_mlflow
    from .results import ResultStore

    sync_mlflow(ResultStore(args.dir), console, args.tracking_uri)
    return 0


def _report(args: argparse.Namespace) -> int:
    from analysis.load import NoRows
    from analysis.report import build_report

    from .results import is_local, local_path

    out = args.out or (
        os.path.join(local_path(args.dir), "report")
        if is_local(args.dir)
        else f"{args.dir.rstrip('/').rpartition('/')[2]}-report"
    )  # a URI: beside the caller
    try:
        report = build_report(args.dir, out, threshold=args.threshold, baseline=args.baseline)
    except NoRows as e:
        return _fail(str(e))
    except FileNotFoundError as e:
        return _fail(f"{args.dir}: not a sweep output ({e.filename or e})")
    console.print(f"report: {report.html_path} ({len(report.images)} plots)")
    if args.mlflow:
        from .driver import log_report
        from .results import ResultStore

        log_report(ResultStore(args.dir), out, console)
    return 0


def _check(args: argparse.Namespace) -> int:
    from .integrity import check_output
    from .results import ResultStore

    problems, summary = check_output(ResultStore(args.dir), mlflow=not args.no_mlflow)
    for p in problems:
        err_console.print(Text.assemble(("problem: ", "bold red"), p))
    console.print(f"{args.dir}: {'OK' if not problems else f'{len(problems)} problem(s)'}; {summary}")
    return 0 if not problems else 1


def _train(args: argparse.Namespace) -> int:
    from engine import TrainConfig, train_default

    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    result = train_default(args.output, dataset=args.data, model_name=args.model, cfg=cfg)
    console.print(
        f"trained {args.model} on {args.data}: test top-1 {result.test_top1:.4f} "
        f"in {result.seconds:.1f} s -> {args.output}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xbar-sweep", description="Monte Carlo sweeps of DNN accuracy on non-ideal ReRAM crossbars"
    )
    sub = p.add_subparsers(dest="command", required=True)
    for name, func, help_ in (
        ("run", _run, "run (or resume) a sweep"),
        ("validate", _validate, "check a spec and print its plan"),
    ):
        s = sub.add_parser(name, help=help_)
        s.add_argument("spec", nargs="?", help="sweep spec (YAML)")
        s.add_argument(
            "--set", action="append", default=[], metavar="PATH=VALUE", help="override a spec field (repeatable)"
        )
        s.add_argument("--resume", metavar="DIR", help="resume the sweep stored in DIR (uses DIR/spec.yaml)")
        if name == "run":
            s.add_argument(
                "--force", action="store_true", help="accept a changed spec: keep matching rows, compute the rest"
            )
        else:
            s.add_argument("--show", type=int, default=20, help="points to list")
            s.add_argument(
                "--preflight",
                action="store_true",
                help="also check what `run` checks before writing: memory, data, checkpoint, resources",
            )
        s.set_defaults(func=func)
    m = sub.add_parser("mlflow-sync", help="log a sweep's MLflow runs from its Parquet output")
    m.add_argument("dir")
    m.add_argument("--tracking-uri", default=None)
    m.set_defaults(func=_sync)
    r = sub.add_parser("report", help="write report.html (tables and plots) for a sweep output")
    r.add_argument("dir")
    r.add_argument(
        "--out",
        default=None,
        help="directory for report.html and the PNGs (default DIR/report; for a URI "
        "such as s3://bucket/name, ./name-report)",
    )
    r.add_argument(
        "--threshold", type=float, default=None, help="top-1 threshold of the yield (default: best mean - 0.01)"
    )
    r.add_argument("--baseline", default="none", help="mitigation the others are compared with")
    r.add_argument("--mlflow", action="store_true", help="also log the report as artifacts of the sweep's parent run")
    r.set_defaults(func=_report)
    c = sub.add_parser("check", help="verify a finished output: every planned key once, files intact, MLflow runs")
    c.add_argument("dir")
    c.add_argument("--no-mlflow", action="store_true", help="skip the MLflow child-run check")
    c.set_defaults(func=_check)
    t = sub.add_parser("train", help="train a zoo model on a data set and save a checkpoint")
    t.add_argument("--model", default="lenet5")
    t.add_argument("--data", default="digits")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("-o", "--output", default="results/lenet5_digits.pt")
    t.set_defaults(func=_train)
    return p


def main(argv: list[str] | None = None) -> int:
    from .errors import SpecError  # light: heavy imports wait until the arguments are parsed
    from .interrupts import SweepInterrupted

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SpecError as e:
        return _fail(str(e))
    except SweepInterrupted as stop:
        err_console.print(f"interrupted ({stop}): {stop.rows_kept} rows kept, rerun to resume")
        return stop.exit_code


if __name__ == "__main__":
    sys.exit(main())
