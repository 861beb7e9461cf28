"""Data sets. Nothing is downloaded unless asked (:func:`download_dataset`, ``data.download``).

* ``digits`` (default): scikit-learn's bundled ``load_digits`` (1,797 8x8 images, 10 classes),
  pixel values / 16 in [0, 1], bilinearly resized to ``input_size`` (default 28, so the papers'
  MNIST networks apply unchanged), split 70/30 stratified with ``random_state=0``.
* ``mnist``, ``cifar10``, ``cifar100``: torchvision's classes reading the standard files under a
  user-given ``root`` (``download=False`` when reading; :func:`download_dataset` fetches them first
  with torchvision's own download when the user sets ``data.download``). For CIFAR we check that
  the files exist and parse, not their md5, so that subsets and re-packed copies load.
* ``imagefolder``: ``root/train`` and ``root/val`` class folders (ImageNet-style), resized to 256,
  centre-cropped to ``input_size`` (default 224), ImageNet normalisation.
"""

from __future__ import annotations

import os
from collections.abc import Sized
from dataclasses import dataclass
from typing import Literal, cast

import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from torchvision import transforms as T

from .catalog import DATASETS  # noqa: F401 - re-exported

DatasetName = Literal["digits", "mnist", "cifar10", "cifar100", "imagefolder"]
_CIFAR_MEAN, _CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class DataSplit:
    train: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    input_size: int


class _CIFAR10Files(torchvision.datasets.CIFAR10):
    def _check_integrity(self) -> bool:
        return all(
            os.path.isfile(os.path.join(self.root, self.base_folder, f)) for f, _ in self.train_list + self.test_list
        )

    def _load_meta(self) -> None:
        import pickle

        with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
            data = pickle.load(f, encoding="latin1")  # the official format is a pickle
        self.classes = data[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class _CIFAR100Files(_CIFAR10Files, torchvision.datasets.CIFAR100):
    pass


def _digits(input_size: int) -> DataSplit:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32, device="cpu").unsqueeze(1) / 16.0
    if input_size != 8:
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False)
    y = torch.tensor(d.target, dtype=torch.int64, device="cpu")
    idx = torch.arange(len(y), device="cpu").numpy()
    tr, te = train_test_split(idx, test_size=0.3, stratify=d.target, random_state=0)
    tr, te = torch.as_tensor(sorted(tr), device="cpu"), torch.as_tensor(sorted(te), device="cpu")
    return DataSplit(TensorDataset(x[tr], y[tr]), TensorDataset(x[te], y[te]), 10, 1, input_size)


def load_dataset(name: str, root: str | None = None, input_size: int | None = None) -> DataSplit:
    if name == "digits":
        return _digits(input_size or 28)
    if name not in DATASETS:
        raise ValueError(f"data.name must be one of {list(DATASETS)} (got {name!r})")
    if not root or not os.path.isdir(root):
        raise ValueError(f"data.root must be an existing directory for {name!r} (got {root!r})")
    if name == "mnist":
        s = input_size or 28
        tf = T.Compose([T.ToTensor()] + ([T.Resize((s, s), antialias=True)] if s != 28 else []))
        mk = lambda train: torchvision.datasets.MNIST(root, train=train, transform=tf, download=False)  # noqa: E731
        return DataSplit(mk(True), mk(False), 10, 1, s)
    if name in ("cifar10", "cifar100"):
        s = input_size or 32
        tf = T.Compose(
            [T.ToTensor()]
            + ([T.Resize((s, s), antialias=True)] if s != 32 else [])
            + [T.Normalize(_CIFAR_MEAN, _CIFAR_STD)]
        )
        cls = _CIFAR10Files if name == "cifar10" else _CIFAR100Files
        return DataSplit(cls(root, True, tf), cls(root, False, tf), 10 if name == "cifar10" else 100, 3, s)
    s = input_size or 224
    tf = T.Compose(
        [
            T.Resize(256 if s == 224 else s, antialias=True),
            T.CenterCrop(s),
            T.ToTensor(),
            T.Normalize(_IMAGENET_MEAN, _IMAGENET_STD),
        ]
    )
    train = torchvision.datasets.ImageFolder(os.path.join(root, "train"), tf)
    test = torchvision.datasets.ImageFolder(os.path.join(root, "val"), tf)
    return DataSplit(train, test, len(train.classes), 3, s)


def download_dataset(name: str, root: str, timeout_s: float = 30.0) -> None:
    """Fetch ``name`` (mnist, cifar10, cifar100) into ``root`` with torchvision's own download and
    checksum checks. Sockets time out after ``timeout_s`` so that a machine without network fails
    fast (raises OSError or RuntimeError)."""
    import socket

    classes = {
        "mnist": torchvision.datasets.MNIST,
        "cifar10": torchvision.datasets.CIFAR10,
        "cifar100": torchvision.datasets.CIFAR100,
    }
    os.makedirs(root, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        for train in (True, False):
            classes[name](root, train=train, download=True)
    finally:
        socket.setdefaulttimeout(previous)


def subset(ds: Dataset, size: int | None, seed: int = 0) -> Dataset:
    """A fixed subset: the first ``size`` indices of a seeded permutation, in index order."""
    n = len(cast(Sized, ds))
    if size is None or size >= n:
        return ds
    perm = torch.randperm(n, generator=torch.Generator(device="cpu").manual_seed(seed), device="cpu")[:size]
    return Subset(ds, sorted(perm.tolist()))


def materialise(ds: Dataset) -> TensorDataset:
    """Load a (small) data set into memory once: evaluations then cost no decoding."""
    if isinstance(ds, TensorDataset):
        return ds
    xs, ys = zip(*(ds[i] for i in range(len(cast(Sized, ds)))))
    return TensorDataset(torch.stack(xs), torch.as_tensor(ys, dtype=torch.int64, device=xs[0].device))


class TensorBatches:
    """In-order batches of an in-memory :class:`TensorDataset` by slicing, on the tensors' device:
    the same batches as a DataLoader without per-sample collation, worker processes or host RNG."""

    def __init__(self, ds: TensorDataset, batch_size: int) -> None:
        self.dataset, self.batch_size = ds, batch_size

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def __iter__(self):
        tensors = self.dataset.tensors
        for start in range(0, len(self.dataset), self.batch_size):
            yield tuple(t[start : start + self.batch_size] for t in tensors)


def loader(ds: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0) -> DataLoader | TensorBatches:
    """Evaluation order (in memory: :class:`TensorBatches`), or a seeded shuffle for training."""
    if not shuffle and isinstance(ds, TensorDataset):
        return TensorBatches(ds, batch_size)
    gen = torch.Generator(device="cpu").manual_seed(seed) if shuffle else None
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen)


def calibration_batches(ds: Dataset, size: int, batches: int, seed: int = 1) -> list[torch.Tensor]:
    """``size`` unlabeled training inputs (a fixed seeded subset) in ``batches`` equal batches."""
    x = materialise(subset(ds, size, seed)).tensors[0]
    return list(torch.tensor_split(x, min(batches, len(x))))
