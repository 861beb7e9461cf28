"""Data sets in their real on-disk formats (no downloads), the model zoo and conversion."""

from __future__ import annotations

import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from engine import HardwareSpec, convert
from engine.crossbar import CrossbarLayer
from engine.data import load_dataset
from engine.models import BUILDERS, TORCHVISION, build_model
from engine.train import load_state_dict_into


def _idx(path: str, arr: np.ndarray) -> None:
    """MNIST idx format: magic (0, 0, dtype 0x08, ndim), big-endian sizes, raw uint8."""
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, arr.ndim))
        f.write(struct.pack(">" + "I" * arr.ndim, *arr.shape))
        f.write(arr.astype(np.uint8).tobytes())


def test_mnist_idx_files_load_through_torchvision(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        _idx(str(raw / f"{prefix}-images-idx3-ubyte"), rng.integers(0, 256, (n, 28, 28)))
        _idx(str(raw / f"{prefix}-labels-idx1-ubyte"), np.arange(n) % 10)
    split = load_dataset("mnist", str(tmp_path))
    assert len(split.train) == 12 and len(split.test) == 5
    x, y = split.test[3]
    assert x.shape == (1, 28, 28) and y == 3 and 0 <= float(x.min()) and float(x.max()) <= 1


def test_cifar_pickles_load_through_torchvision(tmp_path):
    rng = np.random.default_rng(1)
    for name, folder, files, key, meta_key in (
        (
            "cifar10",
            "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
            "labels",
            ("batches.meta", "label_names"),
        ),
        ("cifar100", "cifar-100-python", ["train", "test"], "fine_labels", ("meta", "fine_label_names")),
    ):
        d = tmp_path / name / folder
        d.mkdir(parents=True)
        for f in files:
            with open(d / f, "wb") as fh:
                pickle.dump({"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), key: [0, 1, 2, 3]}, fh)
        with open(d / meta_key[0], "wb") as fh:
            pickle.dump({meta_key[1]: [f"c{i}" for i in range(10 if name == "cifar10" else 100)]}, fh)
        split = load_dataset(name, str(tmp_path / name))
        assert len(split.test) == 4 and split.test[2][0].shape == (3, 32, 32) and split.test[2][1] == 2
        assert split.num_classes == (10 if name == "cifar10" else 100)


def test_imagefolder_loads_through_torchvision(tmp_path):
    for split in ("train", "val"):
        for cls in ("ant", "bee"):
            os.makedirs(tmp_path / split / cls)
            for i in range(2):
                Image.fromarray(np.full((40, 50, 3), 80 * i, dtype=np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    split = load_dataset("imagefolder", str(tmp_path), input_size=32)
    assert split.num_classes == 2 and len(split.test) == 4 and split.test[0][0].shape == (3, 32, 32)


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="data.root"):
        load_dataset("mnist", str(tmp_path / "nope"))


@pytest.mark.parametrize("name", list(BUILDERS))
def test_zoo_models_convert_every_linear_and_conv(name):
    cin, size = (1, 28) if name in ("mlp", "lenet5") else (3, 32)
    model = build_model(name, in_channels=cin, num_classes=10, input_size=size).eval()
    n_layers = sum(isinstance(m, (nn.Linear, nn.Conv2d)) for m in model.modules())
    xm = convert(model, HardwareSpec.model_validate({"adc": {"kind": "ideal"}}), keep_digital=["first"])
    assert len(xm.crossbar_layers()) == n_layers - 1
    assert not isinstance(xm.net.get_submodule(_first(model)), CrossbarLayer)
    x = torch.rand(2, cin, size, size)
    xm.calibrate([x])
    with torch.no_grad():
        y, ref = xm(x), model(x)
    assert y.shape == (1, 2, 10)
    assert torch.allclose(y[0], ref, atol=0.05 * float(ref.abs().max()) + 1e-3)


def _first(model):
    return next(n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d)))


def test_torchvision_models_by_name_take_weights_only_from_a_local_file(tmp_path):
    assert set(TORCHVISION) == {"resnet18", "resnet50", "vgg16", "alexnet", "googlenet"}
    src = build_model("resnet18", in_channels=3, num_classes=7)
    path = tmp_path / "r18.pth"
    torch.save(src.state_dict(), path)
    model = load_state_dict_into(build_model("resnet18", in_channels=3, num_classes=7), str(path))
    for a, b in zip(src.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    xm = convert(model, HardwareSpec.model_validate({"adc": {"kind": "ideal"}}))
    assert len(xm.crossbar_layers()) == 21  # 20 convolutions + fc
    googlenet = build_model("googlenet", in_channels=3, num_classes=5).eval()
    with torch.no_grad():
        assert googlenet(torch.zeros(1, 3, 64, 64)).shape == (1, 5)  # 3 input channels, 5 classes


def test_keep_digital_names_must_exist():
    with pytest.raises(ValueError, match="no Linear/Conv2d layer named"):
        convert(build_model("mlp"), HardwareSpec(), keep_digital=["fc9"])


def _download_spec(tmp_path, data_root, **data) -> str:
    import yaml

    raw = {
        "name": "dl",
        "model": {"name": "lenet5", "train": {"epochs": 1}},
        "data": {"name": "mnist", "root": str(data_root), "download": True, **data},
        "trials": 1,
        "output": {"dir": str(tmp_path / "out")},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_data_download_without_network_fails_in_preflight_naming_set_root_and_option(tmp_path, capsys, monkeypatch):
    """No network: torchvision's own MNIST download fails (its mirrors pointed at a closed local port,
    so the test does not depend on this machine's network), and the run stops before any work with
    one message naming the data set, the root and the option."""
    import torchvision
    from conftest import free_port

    from sweep.cli import main

    closed = free_port()
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [f"http://127.0.0.1:{closed}/"])

    root = tmp_path / "mnist-root"
    assert main(["run", _download_spec(tmp_path, root)]) == 2
    err = capsys.readouterr().err
    assert f"data.download: could not fetch mnist into data.root '{root}'" in err and err.count("error:") == 1, err
    assert not (tmp_path / "out").exists()
    assert main(["validate", "--preflight", _download_spec(tmp_path, root)]) == 0  # validate never downloads


def test_data_download_is_skipped_when_the_files_are_there_and_refused_where_it_cannot_apply(tmp_path, capsys):
    """With the files present nothing is fetched (preflight passes offline); ``download`` on a bundled
    or user-provided set, or without a root, is refused rather than ignored."""
    from sweep.errors import SpecError
    from sweep.preflight import check_data
    from sweep.spec import load_spec

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 4), ("t10k", 2)):
        _idx(str(raw / f"{prefix}-images-idx3-ubyte"), np.zeros((n, 28, 28)))
        _idx(str(raw / f"{prefix}-labels-idx1-ubyte"), np.arange(n) % 10)
    spec, _ = load_spec(_download_spec(tmp_path, tmp_path))
    check_data(spec)  # offline: it would raise if it tried to fetch
    for data, needle in (
        ({"name": "digits"}, "data.download: only for mnist, cifar10, cifar100"),
        ({"root": None}, "data.download: needs data.root"),
    ):
        with pytest.raises(SpecError, match=needle):
            load_spec(_download_spec(tmp_path, tmp_path, **data))
