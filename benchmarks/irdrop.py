"""``python -m benchmarks.irdrop``: exact G_eff per tile, batched, against the scipy reference.

For square tiles of 32, 64 and 128 cells with PytorX's conductance range and TxSim's wires
(1 Ohm row, 4.6 Ohm column segments, 50 Ohm sense, 50 Ohm driver): milliseconds per tile of the
batched fast solve (16 tiles per call on this CPU), of the scipy.sparse direct reference (one
factorisation, M unit inputs), the maximum relative error of G_eff against the reference, and
the ratio to RxNN's reported FCM generation times (1.2 s for 32x32, 61 s for 64x64). Also the
measured maximum relative error of TxSim's path model and of interpolated reuse after a 1 %
conductance change, for PytorX's (3 kOhm - 3 MOhm) and TxSim's (100 kOhm - 1 MOhm) cells, and
the float32 solve (``hardware.ir_drop.solver_dtype``) against the float64 one: its time and its
error relative to the tile's largest G_eff and per cell.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from engine.irdrop import (
    InterpolatedGEff,
    TileWires,
    effective_conductance,
    path_model,
    reference_effective_conductance,
)

from .common import median_seconds, write

RXNN_S = {32: 1.2, 64: 61.0}
RANGES = {"pytorx_3k_3M": (1 / 3e6, 1 / 3e3), "txsim_100k_1M": (1e-6, 1e-5)}
WIRES = TileWires(1.0, 4.6, 50.0, 50.0)


def main() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for size, batch in ((32, 16), (64, 16), (128, 4)):
        g = torch.tensor(rng.uniform(1 / 3e6, 1 / 3e3, (batch, size, size)))
        fast_s = median_seconds(lambda: effective_conductance(g, WIRES), repeats=3) / batch
        fast = effective_conductance(g, WIRES).numpy()
        t = time.perf_counter()
        ref = reference_effective_conductance(g[0].numpy(), WIRES)
        ref_s = time.perf_counter() - t
        err = float(np.abs(fast[0] - ref).max() / np.abs(ref).max())
        f32_s = median_seconds(lambda: effective_conductance(g, WIRES, dtype=torch.float32), repeats=3) / batch
        f32 = effective_conductance(g, WIRES, dtype=torch.float32).numpy()
        row = {
            "size": size,
            "tiles_per_call": batch,
            "fast_ms_per_tile": fast_s * 1e3,
            "reference_ms_per_tile": ref_s * 1e3,
            "max_rel_error_vs_reference": err,
            "float32_ms_per_tile": f32_s * 1e3,
            # float32 solve against the float64 solve, relative to each tile's largest G_eff and per cell
            "float32_max_error_rel_to_max": float(np.abs(f32 - fast).max() / np.abs(fast).max()),
            "float32_max_rel_error_per_cell": float((np.abs(f32 - fast) / np.abs(fast)).max()),
        }
        for name, (lo, hi) in RANGES.items():
            gr = torch.tensor(rng.uniform(lo, hi, (batch, size, size)))
            exact = effective_conductance(gr, WIRES)
            row[f"path_model_max_rel_error_{name}"] = float(((path_model(gr, WIRES) - exact).abs() / exact).max())
            interp = InterpolatedGEff(WIRES, every=10)
            interp(gr)
            g2 = gr * (1 + 0.01 * torch.randn_like(gr))
            exact2 = effective_conductance(g2, WIRES)
            row[f"interpolated_max_rel_error_{name}"] = float(((interp(g2) - exact2).abs() / exact2).max())
        if size in RXNN_S:
            row["speedup_vs_rxnn"] = RXNN_S[size] / fast_s
        rows.append(row)
    path = write(
        "irdrop",
        {"goal_ms_per_64x64_tile": 20.0, "wires": WIRES.__dict__, "results": rows, "threads": torch.get_num_threads()},
    )
    table = Table(title=f"exact G_eff per tile ({path})")
    for c in (
        "size",
        "fast ms/tile",
        "scipy ms/tile",
        "max rel err",
        "vs RxNN",
        "path err (PytorX/TxSim)",
        "interp err (PytorX/TxSim)",
        "float32 ms/tile",
        "float32 err (of max / per cell)",
    ):
        table.add_column(c)
    for r in rows:
        rx = f"{r['speedup_vs_rxnn']:.0f}x" if "speedup_vs_rxnn" in r else "-"
        table.add_row(
            str(r["size"]),
            f"{r['fast_ms_per_tile']:.2f}",
            f"{r['reference_ms_per_tile']:.0f}",
            f"{r['max_rel_error_vs_reference']:.1e}",
            rx,
            f"{r['path_model_max_rel_error_pytorx_3k_3M']:.2f} / {r['path_model_max_rel_error_txsim_100k_1M']:.3f}",
            f"{r['interpolated_max_rel_error_pytorx_3k_3M']:.1e} / {r['interpolated_max_rel_error_txsim_100k_1M']:.1e}",
            f"{r['float32_ms_per_tile']:.2f}",
            f"{r['float32_max_error_rel_to_max']:.1e} / {r['float32_max_rel_error_per_cell']:.1e}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
