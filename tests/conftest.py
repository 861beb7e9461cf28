"""Shared fixtures: the bundled digits data and a LeNet-5 trained once per test session."""

from __future__ import annotations

import os

import pytest
import torch

from engine import fused_draws

torch.set_num_threads(min(2, os.cpu_count() or 1))

# Compiled static draws give the eager bits by construction and are checked (tests/test_fused_draws.py
# runs them on purpose); the suite pins the eager path so that no test depends on when ``auto`` switches.
fused_draws.reset("never")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for servers the tests start)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def digits():
    from engine.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def lenet_checkpoint(tmp_path_factory):
    from engine.train import TrainConfig, train_default

    path = tmp_path_factory.mktemp("ckpt") / "lenet5_digits.pt"
    result = train_default(str(path), cfg=TrainConfig(epochs=20))
    return str(path), result


@pytest.fixture()
def lenet(lenet_checkpoint):
    from engine.train import load_checkpoint

    model, _ = load_checkpoint(lenet_checkpoint[0])
    return model


@pytest.fixture(scope="session")
def calib_inputs(digits):
    x = digits.train.tensors[0]
    return [x[i : i + 256] for i in range(0, 1024, 256)]


class LocalRay:
    """The test session's in-process Ray. ``ensure()`` (re)starts it when needed - the tests that
    run `ray start --head` ... `ray stop` take it down, since `ray stop` stops every Ray process on
    the machine - and returns its live GCS address. Token auth is disabled on this 127.0.0.1-only
    cluster so that driver subprocesses can join it."""

    def ensure(self) -> str:
        import ray

        os.environ["RAY_AUTH_MODE"] = "disabled"
        if not ray.is_initialized():
            ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
        return ray.get_runtime_context().gcs_address

    @staticmethod
    def shutdown() -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()


@pytest.fixture(scope="session")
def ray_cluster():
    local = LocalRay()
    local.ensure()
    yield local
    local.shutdown()
