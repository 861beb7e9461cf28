"""A worker whose trials do nothing (imports nothing heavy): measures the sweep machinery alone."""

from __future__ import annotations

import os
import socket
import time


class NoopWorker:
    def __init__(self, raw: dict, cpus: float, gpus: float) -> None:
        self.host, self.pid = socket.gethostname(), os.getpid()

    def run(self, task: dict) -> list[dict]:
        now = time.time()
        return [
            {
                "instance": i,
                "instance_seed": seed,
                "mitigation": m,
                "top1": 0.0,
                "top5": None,
                "loss": 0.0,
                "count": 0,
                "t_sample_s": 0.0,
                "t_map_s": 0.0,
                "t_mitigate_s": 0.0,
                "t_evaluate_s": 0.0,
                "worker_host": self.host,
                "worker_pid": self.pid,
                "worker_device": "none",
                "finished": now,
            }
            for i, seed, labels in task["trials"]
            for m in labels
        ]
