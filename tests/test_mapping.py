"""Weight -> conductance mapping: PytorX eq. 8-9, Yu eq. 2 and 7, Jung's two realisations."""

from __future__ import annotations

import pytest
import torch

from engine.hardware import HardwareSpec
from engine.mapping import decode_levels, map_weights, quantise_weights
from engine.tiling import TileGrid, sense


def _hw(**kw) -> HardwareSpec:
    return HardwareSpec.model_validate(kw)


def _levels(w: torch.Tensor, hw: HardwareSpec, scheme: str = "direct"):
    m = map_weights(w, hw, scheme)
    grid = TileGrid.for_layer(hw, w.shape[0], w.shape[1], w.shape[2])
    cells = grid.place(m.digits, m.reference)
    return m, grid, cells


@pytest.mark.parametrize(
    "cfg",
    [
        {},
        {"crossbar": {"rows": 16, "cols": 16}},
        {"device": {"bits_per_cell": 2}, "mapping": {"weight_bits": 9}, "crossbar": {"rows": 32, "cols": 32}},
        {"device": {"bits_per_cell": 1}, "mapping": {"weight_bits": 17}, "crossbar": {"rows": 128, "cols": 128}},
    ],
)
def test_differential_pair_difference_is_dG_times_quantised_weight(cfg):
    """PytorX eq. 8: G+ - G- = dG * w_hat, read back through the physical tile layout."""
    hw = _hw(**cfg)
    torch.manual_seed(0)
    w = torch.randn(2, 70, 45)
    m, grid, cells = _levels(w, hw)
    assert cells.shape == (2, 2, grid.t_r, grid.t_c, hw.crossbar.rows, hw.crossbar.cols)
    g = hw.device.g_min_s + cells.double() * hw.device.delta_g_s  # siemens
    decoded = decode_levels(grid.unplace((g - hw.device.g_min_s) / hw.device.delta_g_s), hw)
    assert torch.equal(decoded.round().long(), m.w_hat)
    w_ref, delta = quantise_weights(w, hw.mapping.weight_bits)
    assert torch.equal(w_ref, m.w_hat)
    # round-to-nearest, up to float32 rounding of w / delta (a few ulps of |w|; matters at 17 bits)
    ulps = 4 * torch.finfo(torch.float32).eps * float(w.abs().max())
    assert float((m.w_hat.double() * delta - w.double()).abs().max()) <= delta / 2 + ulps
    # no cell is programmed outside [G_min, G_max]
    assert cells.min() >= 0 and cells.max() <= hw.device.levels - 1


def test_offset_and_differential_realise_the_same_weights():
    w = torch.randn(1, 100, 30)
    diff = _levels(w, _hw())
    off = _levels(w, _hw(mapping={"realisation": "offset"}))
    d_diff = decode_levels(diff[1].unplace(diff[2]), _hw())
    d_off = decode_levels(off[1].unplace(off[2]), _hw(mapping={"realisation": "offset"}), off[0].reference)
    assert torch.equal(d_diff, d_off) and torch.equal(d_diff, diff[0].w_hat)


def test_bit_inversion_stores_complements_and_keeps_eq3():
    """Yu eq. 7: the array of the weight's sign is all ones, the other holds the complement;
    (all ones) - complement = |w|. Catches: the arrays swapped (decoding gives -w)."""
    hw = _hw(device={"bits_per_cell": 1}, mapping={"weight_bits": 9})
    w = torch.randn(1, 40, 20)
    direct, grid, _ = _levels(w, hw)
    bi, _, cells = _levels(w, hw, "bit_inversion")
    assert torch.equal(decode_levels(grid.unplace(cells), hw), direct.w_hat)
    assert bi.digits.float().mean() > direct.digits.float().mean()  # more '1's on the arrays
    pos = direct.w_hat > 0
    assert bool((bi.digits[0][pos] == 1).all()) and bool((bi.digits[1][~pos] == 1).all())


def test_grouped_layers_map_each_group_on_its_own_tiles():
    hw = _hw(crossbar={"rows": 8, "cols": 8})
    w = torch.randn(3, 10, 5)
    m, grid, cells = _levels(w, hw)
    assert cells.shape[1] == 3 and grid.t_r == 2
    assert torch.equal(decode_levels(grid.unplace(cells), hw), m.w_hat)


@pytest.mark.parametrize("realisation", ["differential", "offset"])
@pytest.mark.parametrize("slices", [1, 3])
@pytest.mark.parametrize("contiguous", [False, True])
def test_sense_subtracts_the_physical_columns_of_each_weight(realisation, slices, contiguous):
    """sense() against the column arithmetic written out cell by cell: I+ - I- of the same physical
    column (differential) or of weight j's slice s and slice s's reference column (offset), on the
    read's permuted layout, a row-major copy of it and an indexed view (other leading dims), with
    the unread columns cut off."""
    weight_bits = 2 * slices + (realisation == "differential")  # the sign is the pair's, or in the offset value
    hw = HardwareSpec.model_validate(
        {
            "crossbar": {"rows": 8, "cols": 16},
            "device": {"bits_per_cell": 2},
            "mapping": {"realisation": realisation, "weight_bits": weight_bits},
        }
    )
    assert hw.slices == slices
    grid = TileGrid.for_layer(hw, 2, 11, 9)
    g = torch.Generator().manual_seed(slices)
    cells = torch.rand((3, *grid.cell_shape), generator=g)  # (I, A, G, t_r, t_c, R, C)
    read = cells.permute(0, 2, 3, 5, 1, 4, 6)  # (I, G, t_r, R, A, t_c, C)
    for t in (read[..., : grid.used_cols], read.contiguous()[..., : grid.used_cols], read[0, 1]):
        got = sense(t, grid, contiguous=contiguous)
        assert got.shape == (*t.shape[:-3], grid.t_c, grid.wcols, slices)
        assert not contiguous or got.is_contiguous()
        want = torch.empty(got.shape)
        for j in range(grid.wcols):
            for s in range(slices):
                col = j * slices + s
                ref = t[..., 0, :, grid.data_cols + s] if grid.offset else t[..., 1, :, col]
                want[..., j, s] = t[..., 0, :, col] - ref
        assert torch.equal(got, want)
