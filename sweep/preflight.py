"""Checks that need more than the spec's own fields, run before anything is written or any Ray
work starts (each failure is a :class:`SpecError`, exit 2, naming the field):

* memory (every point, in :func:`sweep.plan.make_plan`): does one instance of the model fit a
  worker, and does one tile's exact IR-drop solve fit ``execution.solve_memory_mb``;
* :func:`preflight`: the output directory can be written (not a file, not under a file, writable,
  a valid URI), the data set's files are under ``data.root``, and a checkpoint loads with
  ``weights_only=True`` into the architecture ``model.name`` names."""

from __future__ import annotations

import math
import os
import tempfile

from .spec import SpecError, SweepSpec

_DATA_SHAPES = {"digits": (1, 10, 28), "mnist": (1, 10, 28), "cifar10": (3, 10, 32), "cifar100": (3, 100, 32)}


def _data_shape(spec: SweepSpec) -> tuple[int, int, int]:
    """(in_channels, num_classes, input_size) without loading the data."""
    d = spec.data
    if d.name in _DATA_SHAPES:
        c, k, s = _DATA_SHAPES[d.name]
        return c, k, d.input_size or s
    train = os.path.join(d.root or "", "train")
    classes = len([e for e in os.scandir(train) if e.is_dir()]) if os.path.isdir(train) else 1000
    return 3, classes, d.input_size or 224


def worker_memory_bytes(spec: SweepSpec) -> int | None:
    """Memory one worker can hold, where the driver can know it: the local GPU's (its share) or
    the local host's; None on a cluster joined through RAY_ADDRESS (checked by the workers)."""
    if os.environ.get("RAY_ADDRESS"):
        return None
    ex = spec.execution
    if ex.gpus_per_worker > 0:
        import torch

        if not torch.cuda.is_available():
            return None
        return int(torch.cuda.get_device_properties(0).total_memory * min(1.0, ex.gpus_per_worker))
    import psutil

    return int(psutil.virtual_memory().total)


def check_memory(spec: SweepSpec) -> None:
    """SpecError naming the layer, its tile count and the budget when a solve or an instance cannot fit."""
    if spec.kind != "inference":
        return
    import torch

    from engine import build_model, footprint

    c, k, s = _data_shape(spec)
    with torch.device("meta"):  # shapes only: no weights are allocated
        model = build_model(spec.model.name, c, k, s)
    layers = footprint(model, spec.hardware, spec.model.keep_digital)
    if not layers:
        return
    hw, ex = spec.hardware, spec.execution
    per_tile = layers[0].solve_bytes_per_tile
    budget = None if ex.solve_memory_mb is None else ex.solve_memory_mb * 2**20
    big = max(layers, key=lambda la: la.tiles)
    if per_tile and budget is not None and per_tile > budget:
        raise SpecError(
            f"execution.solve_memory_mb: one {hw.crossbar.rows}x{hw.crossbar.cols} tile needs "
            f"{per_tile / 2**20:.2f} MiB for the exact IR-drop solve; layer {big.name!r} has {big.tiles} tiles and the "
            f"budget is {ex.solve_memory_mb:g} MiB (allowed: >= {math.ceil(per_tile / 2**20 * 100) / 100:g})"
        )
    available = worker_memory_bytes(spec)
    need = sum(la.state_bytes for la in layers) + (budget if per_tile and budget else 0)
    if available is not None and need > available:
        raise SpecError(
            f"model.name: one programmed instance of {spec.model.name} needs about {need / 2**30:.2f} GiB "
            f"(largest layer {big.name!r}: {big.tiles} tiles, {big.state_bytes / 2**30:.2f} GiB; solve budget "
            f"{(budget or 0) / 2**30:.2f} GiB) but a worker has {available / 2**30:.2f} GiB; use larger crossbars, "
            "fewer weight slices, or workers with more memory"
        )


def check_output(spec: SweepSpec) -> None:
    """``output.dir`` is a directory this process can create and write, or a valid URI."""
    uri = spec.output.dir
    if "://" in uri and not uri.startswith("file://"):
        check_object_store(spec)
        return
    path = os.path.abspath(uri.removeprefix("file://"))
    if os.path.exists(path) and not os.path.isdir(path):
        raise SpecError(f"output.dir: {uri!r} is a file, not a directory")
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise SpecError(f"output.dir: {uri!r} is under {probe!r}, which is a file")
    try:  # a real probe, not os.access: root passes access checks on read-only mounts and immutable dirs
        with tempfile.TemporaryFile(dir=probe, prefix=".xbar-sweep-probe-"):
            pass
    except OSError as e:
        raise SpecError(f"output.dir: {probe!r} is not writable ({e.strerror}), so {uri!r} cannot be written") from None


def check_object_store(spec: SweepSpec, timeout_s: float = 30.0) -> None:
    """An ``output.dir`` URI names a filesystem that answers, with credentials it accepts, in a bucket
    that exists; and MLflow, whose default SQLite store cannot live on an object store, is pointed
    elsewhere. Endpoint and credentials come from the standard ``AWS_*`` variables (``AWS_ENDPOINT_URL``,
    ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` or a profile, ``AWS_DEFAULT_REGION``)."""
    import concurrent.futures

    import pyarrow as pa
    import pyarrow.fs as pafs

    uri = spec.output.dir
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, ValueError, OSError) as e:
        raise SpecError(f"output.dir: {uri!r} is not a usable filesystem URI ({e})") from None
    bucket = path.split("/")[0]
    where = os.environ.get("AWS_ENDPOINT_URL", "the default endpoint") if fs.type_name == "s3" else uri
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:  # a bounded wait: an unreachable endpoint retries with back-off for minutes
        info = pool.submit(fs.get_file_info, bucket).result(timeout=timeout_s)
    except concurrent.futures.TimeoutError:
        raise SpecError(
            f"output.dir: {where} did not answer within {timeout_s:g} s for {uri!r}; check "
            "AWS_ENDPOINT_URL and the network"
        ) from None
    except OSError as e:
        raise SpecError(
            f"output.dir: cannot use {uri!r} at {where} ({str(e).splitlines()[0]}); set "
            "AWS_ENDPOINT_URL and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) to an "
            "endpoint and credentials it accepts"
        ) from None
    finally:
        pool.shutdown(wait=False)
    if info.type == pafs.FileType.NotFound:
        raise SpecError(
            f"output.dir: bucket {bucket!r} does not exist at {where}; create it first "
            "(xbar-sweep writes inside a bucket, it never creates one)"
        )
    ml = spec.output.mlflow
    if ml.enabled and not (ml.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
        raise SpecError(
            f"output.mlflow.tracking_uri: MLflow's default SQLite store cannot live on {uri!r}; set "
            "output.mlflow.tracking_uri (e.g. http://127.0.0.1:5000) or MLFLOW_TRACKING_URI, or "
            "output.mlflow.enabled: false"
        )


_DATA_FILES = {
    "mnist": [
        os.path.join("MNIST", "raw", f)
        for f in (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        )
    ],
    "cifar10": [
        os.path.join("cifar-10-batches-py", f)
        for f in ("batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6)))
    ],
    "cifar100": [os.path.join("cifar-100-python", f) for f in ("meta", "train", "test")],
}


def check_data(spec: SweepSpec, fetch: bool = True) -> None:
    """The data set's files exist under ``data.root``; with ``data.download`` missing files are fetched
    here, on the driver, before any cluster work (``fetch=False``: only say that they would be)."""
    d = spec.data
    if d.name == "digits":
        return
    root = d.root or ""
    if d.name == "imagefolder":
        for split in ("train", "val"):
            folder = os.path.join(root, split)
            if not os.path.isdir(folder) or not any(e.is_dir() for e in os.scandir(folder)):
                raise SpecError(f"data.root: imagefolder needs class folders under {folder!r}")
        return
    missing = [f for f in _DATA_FILES[d.name] if not os.path.isfile(os.path.join(root, f))]
    if missing and d.download and fetch:
        from engine import download_dataset

        try:
            download_dataset(d.name, root)
        except (OSError, RuntimeError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise SpecError(
                f"data.download: could not fetch {d.name} into data.root {root!r} ({reason}); "
                "check the network, or put the files there by hand and set data.download: false"
            ) from None
        missing = [f for f in _DATA_FILES[d.name] if not os.path.isfile(os.path.join(root, f))]
    if missing and not (d.download and not fetch):
        raise SpecError(
            f"data.root: {d.name} files not found under {root!r}: {', '.join(missing)} "
            "(nothing is downloaded unless data.download: true)"
        )


def check_checkpoint(spec: SweepSpec) -> None:
    """``model.checkpoint`` loads with ``weights_only=True`` and matches ``model.name``."""
    if not spec.model.checkpoint:
        return
    import torch

    from engine import CHECKPOINT_FORMAT, build_model

    path = spec.model.checkpoint
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a file that is not a checkpoint
        raise SpecError(
            f"model.checkpoint: {path!r} is not a torch checkpoint that loads with "
            f"weights_only=True ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None
    if isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT:
        if ckpt.get("model") != spec.model.name:
            raise SpecError(
                f"model.name: {spec.model.name!r}, but the checkpoint {path!r} holds a "
                f"{ckpt.get('model')!r}; set model.name: {ckpt.get('model')}"
            )
        return
    state = ckpt["state_dict"] if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict) else ckpt
    if not isinstance(state, dict):
        raise SpecError(f"model.checkpoint: {path!r} holds neither an xbar-sweep checkpoint nor a state dict")
    c, k, s = _data_shape(spec)
    with torch.device("meta"):
        own = build_model(spec.model.name, c, k, s).state_dict()
    missing = [n for n in own if n not in state]
    wrong = [n for n in own if n in state and tuple(state[n].shape) != tuple(own[n].shape)]
    if missing or wrong:
        detail = (f"missing {missing[:3]}" if missing else "") + (f" shapes differ for {wrong[:3]}" if wrong else "")
        raise SpecError(
            f"model.checkpoint: {path!r} does not fit model.name {spec.model.name!r} on "
            f"{spec.data.name} ({detail.strip()})"
        )


def preflight(spec: SweepSpec, fetch: bool = True) -> None:
    """Everything :func:`sweep.driver.run_sweep` checks before it takes the output lease (``fetch``:
    download a data set the spec asks to download; ``validate --preflight`` does not)."""
    check_output(spec)
    check_data(spec, fetch)
    check_checkpoint(spec)
