"""Validated description of the crossbar hardware (SI units in every field name).

Defaults follow PytorX Table 1 (He et al., DAC 2019): 64 x 64 crossbars, G_min/G_max =
1/3 MOhm .. 1/3 kOhm (0.333 uS / 333 uS), 8-bit DAC and ADC, 7-bit cells, 300 K.
Every non-ideality is its own sub-section and is off by default.

Unit conventions used across ``engine``:
  * the conductance step of one cell is ``delta_g_s = (g_max_s - g_min_s) / (2**bits_per_cell - 1)``
    (PytorX eq. 8-9, equal-dG mapping), so the top level is exactly G_max; Table 1's 2.601 uS is
    (G_max - G_min) / 2**7, 0.8 % smaller (the 2**N of PytorX Alg. 1), a departure made here;
  * the DAC step is ``CrossbarLayer.delta_v_v = v_read_v / (the largest DAC chunk code)``: the
    largest chunk drives ``v_read_v`` across a cell (PytorX eq. 6, V_DAC - V_ref = dV_DAC * x);
  * internally conductances are stored in units of dG, voltages in units of dV_DAC and
    currents in units of dG * dV_DAC (one LSB of the integer MAC of PytorX eq. 10).
"""

from __future__ import annotations

import functools
import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_EDITS = [0]  # assignments to any spec field so far (see spec_edits)


def spec_edits() -> int:
    """How many times a field of any spec was assigned in place. Values derived from a spec and
    cached by its identity (a layer's read plan, a trial's draw recipe) are valid while this count
    is unchanged: a spec edited in place is then derived again, as when nothing was cached."""
    return _EDITS[0]


class _Section(BaseModel):
    """Base for every spec section: unknown keys are errors, assignments are re-validated (and
    counted: :func:`spec_edits`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)

    def __setattr__(self, name: str, value: object) -> None:
        super().__setattr__(name, value)
        _EDITS[0] += 1


class CrossbarGeometry(_Section):
    """Physical size of one crossbar array (PytorX Table 1: C_size 32, 64 or 128)."""

    rows: int = Field(64, ge=1, le=4096, description="word lines (inputs) per array")
    cols: int = Field(64, ge=1, le=4096, description="bit lines (physical columns) per array")


class DeviceSpec(_Section):
    """ReRAM cell: conductance range and programmable levels (PytorX Table 1, eq. 8-9)."""

    g_min_s: float = Field(
        1.0 / 3.0e6, ge=0.0, description="lowest conductance, siemens (HRS); 0 as in aihwkit's converters"
    )
    g_max_s: float = Field(1.0 / 3.0e3, gt=0.0, description="highest conductance, siemens (LRS)")
    bits_per_cell: int = Field(7, ge=1, le=16, description="levels per cell = 2**bits_per_cell")

    @model_validator(mode="after")
    def _range(self) -> DeviceSpec:
        if self.g_min_s >= self.g_max_s:
            raise ValueError(
                f"hardware.device.g_min_s must be < g_max_s (got g_min_s={self.g_min_s:g} S, "
                f"g_max_s={self.g_max_s:g} S)"
            )
        return self

    @property
    def levels(self) -> int:
        return 2**self.bits_per_cell

    @property
    def delta_g_s(self) -> float:
        """Conductance step dG of one cell level (PytorX eq. 8)."""
        return (self.g_max_s - self.g_min_s) / (self.levels - 1)

    @property
    def g_min_n(self) -> float:
        """G_min in units of dG: the engine holds a cell as h = G / dG - g_min_n (0 at G_min)."""
        return self.g_min_s / self.delta_g_s


class MappingSpec(_Section):
    """How a weight becomes cell levels: quantisation, bit slicing and signed realisation.

    ``weight_bits`` is the signed width (sign + magnitude): a weight is quantised to
    w_hat in [-(2**(weight_bits-1) - 1), 2**(weight_bits-1) - 1] with
    dw = max|w| / (2**(weight_bits-1) - 1) per layer (PytorX Alg. 1, line 4). The magnitude
    bits are sliced over ``ceil((weight_bits - 1) / bits_per_cell)`` adjacent cells
    (Yu eq. 2: Yu's N_w = 16 magnitude bits in 1-bit cells is ``weight_bits: 17``).

    ``realisation``:
      * ``differential`` - balanced pair of arrays, G+ - G- = dG * w_hat (PytorX eq. 9,
        Jung Table I "balanced");
      * ``offset`` - one array storing w_hat + (2**(weight_bits-1) - 1), with one reference
        column per slice in every tile whose current is subtracted (Jung "unbalanced").
    """

    weight_bits: int = Field(8, ge=2, le=32, description="signed weight width, sign included")
    realisation: Literal["differential", "offset"] = "differential"

    @property
    def magnitude_bits(self) -> int:
        return self.weight_bits - 1


class InputSpec(_Section):
    """Input quantisation and DAC (PytorX eq. 6; Yu's 1-bit DAC bit-serial streaming).

    Inputs are quantised per layer with dx calibrated as in PytorX Alg. 1 (mean of per-batch
    max|x| / 2**(input_bits-1); unsigned codes with 2**input_bits - 1 levels when the layer
    never sees a negative input). With ``dac_bits < input_bits`` the code is streamed as
    ceil(input_bits / dac_bits) chunks of ``dac_bits`` (two's complement, the top chunk signed)
    and the digitised column outputs are shifted and added.
    """

    input_bits: int = Field(8, ge=1, le=16, description="activation code width")
    dac_bits: int = Field(8, ge=1, le=16, description="DAC resolution; < input_bits = bit-serial")
    v_read_v: float = Field(
        1.63,
        gt=0.0,
        le=10.0,
        description="cell voltage of DAC code 2**(dac_bits-1), volts (PytorX Table 1: V_dd - V_ref = 3.3 - 1.67 V)",
    )

    @model_validator(mode="after")
    def _dac(self) -> InputSpec:
        if self.dac_bits > self.input_bits:
            raise ValueError(
                f"hardware.input.dac_bits must be <= input_bits (got dac_bits={self.dac_bits}, "
                f"input_bits={self.input_bits})"
            )
        return self

    @property
    def planes(self) -> int:
        return math.ceil(self.input_bits / self.dac_bits)


class ADCSpec(_Section):
    """Column ADC (PytorX eq. 11): code = clamp(round(I / dI_ADC)).

    ``full_scale_a`` given: dI_ADC = full_scale_a / 2**(bits-1) for signed currents, full_scale_a /
    (2**bits - 1) when the calibration never sees a negative current (e.g. digital subtraction of
    non-negative inputs; Yu's 1-bit ADC whose LSB is one cell current: full_scale_a = (G_max -
    G_min) v_read_v with 1-bit cells and DAC). Otherwise dI_ADC is calibrated
    per layer on ``calibration_batches`` batches of ideal-crossbar currents as in PytorX Alg. 1
    (mean over batches of max|I| / 2**(bits-1)), per layer or, with ``range_scope: slice``, per
    weight-slice significance. ``kind: ideal`` passes currents through.
    ``subtract: analog`` senses I+ - I- (or I - I_ref) with one ADC per column pair (PytorX
    eq. 7); ``digital`` digitises every physical column and subtracts after (Yu eq. 3).
    """

    kind: Literal["quantized", "ideal"] = "quantized"
    bits: int = Field(8, ge=1, le=24, description="ADC resolution per column")
    range_scope: Literal["layer", "slice"] = Field(
        "layer",
        description="one calibrated range per layer (PytorX Alg. 1) or one per weight-slice "
        "significance (useful when slices use different parts of their range, e.g. offset weights)",
    )
    full_scale_a: float | None = Field(None, gt=0.0, description="given range in amperes")
    calibration_batches: int = Field(4, ge=1, le=10_000)
    subtract: Literal["analog", "digital"] = "analog"


class StuckAtFaults(_Section):
    """Stuck-at faults with physical names (see ../shared/papers.md on the naming conflict).

    Accepted spellings, all normalised to the two physical rates:
      * ``stuck_at_gmax_rate`` / ``stuck_at_gmin_rate`` (G_max = LRS, "stuck-on/close";
        G_min = HRS, "stuck-off/open");
      * ``sa0_rate`` / ``sa1_rate`` together with ``convention: pytorx`` (SA0 -> G_max,
        SA1 -> G_min, PytorX Sec. 2.1.1) or ``convention: yu`` (SA0 -> G_min, SA1 -> G_max);
      * ``fault_rate`` + ``open_close_ratio`` (Jung/FPT): G_min = FR*OCR/(1+OCR),
        G_max = FR/(1+OCR).
    """

    stuck_at_gmax_rate: float = Field(0.0, ge=0.0, le=1.0)
    stuck_at_gmin_rate: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        has_sa = "sa0_rate" in data or "sa1_rate" in data
        has_fr = "fault_rate" in data or "open_close_ratio" in data
        has_phys = "stuck_at_gmax_rate" in data or "stuck_at_gmin_rate" in data
        if sum((has_sa, has_fr, has_phys)) > 1:
            raise ValueError(
                "hardware.faults: give the rates one way only: stuck_at_gmax_rate/"
                "stuck_at_gmin_rate, or sa0_rate/sa1_rate with convention, or "
                "fault_rate/open_close_ratio"
            )
        convention = data.pop("convention", None)
        if has_sa:
            if convention not in ("pytorx", "yu"):
                raise ValueError(
                    "hardware.faults.convention must be 'pytorx' or 'yu' when sa0_rate/sa1_rate "
                    "are used (the papers disagree: PytorX SA0 = stuck at G_max, Yu SA0 = "
                    f"stuck at G_min); got {convention!r}"
                )
            sa0 = _rate(data.pop("sa0_rate", 0.0), "hardware.faults.sa0_rate")
            sa1 = _rate(data.pop("sa1_rate", 0.0), "hardware.faults.sa1_rate")
            gmax, gmin = (sa0, sa1) if convention == "pytorx" else (sa1, sa0)
            data["stuck_at_gmax_rate"], data["stuck_at_gmin_rate"] = gmax, gmin
        elif convention is not None:
            raise ValueError("hardware.faults.convention is only allowed with sa0_rate/sa1_rate")
        if has_fr:
            fr = _rate(data.pop("fault_rate", 0.0), "hardware.faults.fault_rate")
            ocr = data.pop("open_close_ratio", 1.0)
            if not isinstance(ocr, (int, float)) or not (ocr > 0 and math.isfinite(ocr)):
                raise ValueError(f"hardware.faults.open_close_ratio must be a finite number > 0 (got {ocr!r})")
            data["stuck_at_gmin_rate"] = fr * ocr / (1.0 + ocr)
            data["stuck_at_gmax_rate"] = fr / (1.0 + ocr)
        return data

    @model_validator(mode="after")
    def _sum(self) -> StuckAtFaults:
        total = self.stuck_at_gmax_rate + self.stuck_at_gmin_rate
        if total > 1.0 + 1e-12:
            raise ValueError(
                f"hardware.faults: stuck_at_gmax_rate + stuck_at_gmin_rate must be in [0, 1] (got {total:g})"
            )
        return self

    @property
    def enabled(self) -> bool:
        return self.stuck_at_gmax_rate > 0 or self.stuck_at_gmin_rate > 0


def _rate(value: object, name: str) -> float:
    if not isinstance(value, (int, float)) or not (0.0 <= float(value) <= 1.0):
        raise ValueError(f"{name} must be a number in [0, 1] (got {value!r})")
    return float(value)


class ProgrammingVariation(_Section):
    """Static per-instance programming error of every non-stuck cell (drawn once per instance).

    * absolute (conductance domain): G' = G + sigma_abs * z, sigma_abs = ``sigma_abs_s`` (siemens) or
      ``sigma_abs_delta_g`` * dG. PytorX eq. 2's (dG/3)^2 term is a read-to-read fluctuation; that
      reading is :class:`ReadFluctuation`. This static term is its programming-error reading.
    * relative, ``domain: conductance`` (RxNN sigma/mu): ``gaussian`` G' = G (1 + sigma_rel z);
      ``lognormal`` G' = G exp(s z - s^2/2), s^2 = ln(1 + sigma_rel^2) (mean G, std sigma_rel G).
    * relative, ``domain: resistance`` (Jung/FPT: R' = R (1 + eps), eps ~ N(0, sigma_rel^2)):
      ``gaussian`` G' = G / (1 + sigma_rel z), a cell whose 1 + sigma_rel z <= 0 (or whose G' would
      exceed it) reads the ceiling, so ``ceiling: g_max`` is required; ``lognormal``
      R' = R exp(s z - s^2/2) (mean R, std sigma_rel R), i.e. G' = G exp(-s z + s^2/2).
    * absolute, level-dependent (aihwkit ``PCMLikeNoiseModel.apply_programming_noise_to_conductance``,
      Nandakumar et al., ICECS 2019): G' = G_T + sigma(g_T) z, sigma = sum_i c_i g_T^i uS with
      g_T = G_T / G_max, ``sigma_poly_us`` = (c_0, c_1, ...) fitted at G_max = ``poly_g_max_ref_us``
      and scaled by G_max / that reference (aihwkit's PCM fit: (0.26348, 1.9650, -1.1731) at 25 uS,
      the ``pcm_ibm`` preset). It uses the absolute term's stream, so it replaces sigma_abs_*.
    ``ceiling: g_max`` clips every programmed cell at G_max (a device cannot conduct more than its
    LRS); ``none`` leaves the upper tail as drawn. Conductances are always floored at 0 S.
    z ~ N(0, 1) per cell, one stream per term (engine.seeding).
    """

    sigma_abs_s: float = Field(0.0, ge=0.0, le=1.0, description="absolute sigma, siemens")
    sigma_abs_delta_g: float = Field(0.0, ge=0.0, le=1000.0, description="absolute sigma in dG")
    sigma_rel: float = Field(0.0, ge=0.0, le=10.0, description="relative sigma/mu")
    distribution: Literal["gaussian", "lognormal"] = "gaussian"
    domain: Literal["conductance", "resistance"] = Field(
        "conductance", description="what sigma_rel perturbs: G (RxNN) or R = 1/G (Jung's R' = R(1 + eps))"
    )
    ceiling: Literal["none", "g_max"] = Field("none", description="clip programmed cells at G_max")
    sigma_poly_us: list[Annotated[float, Field(ge=-1e3, le=1e3)]] = Field(
        default_factory=list,
        max_length=8,
        description="absolute sigma as a polynomial of G_target/G_max, uS (aihwkit PCM programming noise)",
    )
    poly_g_max_ref_us: float = Field(25.0, gt=0.0, le=1e6, description="G_max the polynomial was fitted at, uS")

    @model_validator(mode="after")
    def _one_absolute(self) -> ProgrammingVariation:
        if sum(bool(x) for x in (self.sigma_abs_s > 0, self.sigma_abs_delta_g > 0, self.sigma_poly_us)) > 1:
            raise ValueError(
                "hardware.variation: give the absolute sigma as one of sigma_abs_s, sigma_abs_delta_g or "
                "sigma_poly_us, not several"
            )
        if self.poly_g_max_ref_us != 25.0 and not self.sigma_poly_us:
            raise ValueError("hardware.variation.poly_g_max_ref_us: only with sigma_poly_us")
        if (
            self.domain == "resistance"
            and self.distribution == "gaussian"
            and self.sigma_rel > 0
            and self.ceiling == "none"
        ):
            raise ValueError(
                "hardware.variation.ceiling must be 'g_max' with domain: resistance and a gaussian sigma_rel "
                "(R (1 + eps) <= 0 has no finite conductance)"
            )
        return self

    @property
    def enabled(self) -> bool:
        return self.absolute or self.sigma_rel > 0

    @property
    def absolute(self) -> bool:
        """An absolute term is drawn (constant or level-dependent sigma)."""
        return self.sigma_abs_s > 0 or self.sigma_abs_delta_g > 0 or bool(self.sigma_poly_us)


class ReadFluctuation(_Section):
    """PytorX eq. 2 second term as a read-to-read fluctuation: every cell reads G + sigma dG z with a
    fresh z ~ N(0, 1) per cell and read (``sigma_delta_g: 0.3333`` is PytorX's dG/3). Summed exactly
    on each bit line: a Gaussian current of variance (sigma dG)^2 sum_r V_r^2."""

    sigma_delta_g: float = Field(0.0, ge=0.0, le=1000.0, description="per-read conductance sigma in dG")

    @property
    def enabled(self) -> bool:
        return self.sigma_delta_g > 0


class ThermalShotNoise(_Section):
    """Thermal + shot read noise, PytorX eq. 1: i_rms = sqrt(G f (4 k_B T + 2 q |V|)) per cell
    per read, summed exactly (independent Gaussians) on every bit line. Uses the top-level
    ``frequency_hz`` and ``temperature_k``."""

    enabled: bool = False


class TelegraphNoise(_Section):
    """Random telegraph noise, PytorX eq. 3 (Ielmini's fit R_rtn / R = a R + b).

    G_rtn / G = (b G + a) / (G - (b G + a)); each cell reads G + G_rtn with probability
    ``occupancy`` (tau < 0.5 in the paper) independently per read. ``sampling: exact`` draws the
    Bernoulli state of every cell for every read (memory O(reads x rows x cols));
    ``gaussian`` draws each bit line's summed RTN current from a normal distribution with the
    exact mean and variance of that Bernoulli sum (central limit over the rows).
    """

    enabled: bool = False
    a: float = Field(1.662e-7, ge=0.0, description="fit parameter a (siemens)")
    b: float = Field(0.0015, ge=0.0, lt=1.0, description="fit parameter b")
    occupancy: float = Field(0.5, ge=0.0, le=1.0, description="P(trap occupied) per read")
    sampling: Literal["gaussian", "exact"] = "gaussian"


class ColumnAWGN(_Section):
    """Additive white Gaussian noise on every sensed column current, per read (Yu Sec. II-B.1):
    J_n = J + n, n ~ N(0, sigma_n^2). ``sigma_lsb`` is sigma_n in units of dG * dV_DAC, one unit
    of the integer MAC (Yu's unit: one ON cell under one ON input); Yu's sigma_n^2 = 0.4608 is
    ``sigma_lsb: 0.6788`` with 1-bit cells and DAC."""

    sigma_lsb: float = Field(0.0, ge=0.0, le=1e6)

    @property
    def enabled(self) -> bool:
        return self.sigma_lsb > 0


class IRDrop(_Section):
    """Wire, sense and driver resistance (RxNN Sec. V-B, exact linear network; see engine.irdrop).

    Each cell owns one row segment on its driver side and one column segment on its sense side
    (TxSim's per-cell values: r_row 1 Ohm, r_col 4.6 Ohm). ``model: exact`` solves the network;
    ``path`` is TxSim's approximate analytical model (each cell in series with its path).
    Applies to sampled instances; calibration uses the ideal crossbar. The exact solve runs in
    chunks of tiles sized to ``execution.solve_memory_mb`` (bounded memory at any layer size).
    """

    enabled: bool = False
    r_row_ohm: float = Field(1.0, gt=0.0, le=1e6, description="row wire resistance per cell segment")
    r_col_ohm: float = Field(4.6, gt=0.0, le=1e6, description="column wire resistance per cell segment")
    r_sense_ohm: float = Field(0.0, ge=0.0, le=1e9, description="sense resistance into the virtual ground")
    r_driver_ohm: float = Field(0.0, ge=0.0, le=1e9, description="row driver resistance")
    model: Literal["exact", "path"] = "exact"
    solver_dtype: Literal["float64", "float32"] = Field(
        "float64",
        description="precision of the exact solve (float32: about twice as fast, error in the IR-drop "
        "benchmark; wire conductances exceed cell conductances by up to 10^7)",
    )


class DACLoading(_Section):
    """RxNN Fig. 4 DAC: a resistive divider R_DAC(input) / R_PD driving the row's load G_load.

    With R_DAC chosen so that the unloaded divider gives the ideal voltage V, the loaded output is
    V_out = V / (1 + R_PD G_load (1 - |V|/V_fs)), V_fs = ``input.v_read_v``, G_load the row's
    total cell conductance in its array tile: exact at 0 and at full scale, low in between.
    """

    enabled: bool = False
    r_pd_ohm: float = Field(1000.0, gt=0.0, le=1e9, description="pull-down resistance R_PD")


class NonlinearIV(_Section):
    """Cell I-V (engine.nonideal.iv): ``linear`` I = G V, or ``sinh`` I = G V_0 sinh(V / V_0), the
    conduction term of the Stanford/PKU RRAM compact model (Guan, Yu, Wong, IEEE EDL 33, 1405 (2012),
    V_0 = 0.25 V) with G the programmed small-signal conductance. Acts on sampled instances (the ADC
    is calibrated on the ideal, linear crossbar, as for IR drop). Without IR drop every cell sees its
    row voltage; with ``ir_drop`` (exact) the network is solved per input vector by Newton's method to
    ``newton_rtol`` x max|V| of node voltage, at most ``newton_max_iter`` iterations (a trial that
    does not converge fails with that message; rows report the iterations used).
    """

    model: Literal["linear", "sinh"] = "linear"
    v0_v: float = Field(0.25, gt=0.0, le=100.0, description="sinh: voltage scale V_0 (Guan et al. 2012: 0.25 V)")
    newton_rtol: float = Field(
        1e-10,
        gt=0.0,
        le=0.1,
        description="sinh with exact IR drop: node-voltage tolerance relative to the largest input voltage",
    )
    newton_max_iter: int = Field(50, ge=1, le=1000, description="sinh with exact IR drop: Newton iterations allowed")


# Wan et al. (2022) relaxation fit as published in aihwkit: sigma in uS (G_max = 40 uS), coefficients of
# (g_T)^0, ^1, ..., ^4 per time since programming (seconds).
RERAM_WAN2022_TIMES = {
    1.0: (0.348, 16.030, -43.853, 45.393, -16.815),
    86400.0: (0.701, 22.086, -50.773, 47.095, -16.458),
    172800.0: (0.782, 20.274, -43.507, 37.062, -11.934),
}


class DriftSpec(_Section):
    """Conductance drift and accumulated 1/f read noise after programming, at inference time
    ``hardware.time_s`` (aihwkit's PCM statistical model, ``aihwkit.inference.noise.pcm``
    ``PCMLikeNoiseModel``, fitted by Nandakumar et al., ICECS 2019; docs ``pcm_inference``).

    With t = time_s + t0_s (time_s counts from the end of programming, t0 the first read):
      drift  G(t) = G_prog (t / t0)^(-nu), nu drawn once per cell and instance (its own stream):
        ``pcm``: nu = |mu + sigma z|, mu = clamp(-0.0155 ln(g_T) + 0.0244, 0.049, 0.1),
                 sigma = clamp(-0.0125 ln(g_T) - 0.0059, 0.008, 0.045), g_T = G_target / G_max
                 (clipped at 1e-7), as ``generate_drift_coefficients``;
        ``power_law``: nu = |nu_mean + nu_std z| for every level (the same law with exponents you
                 measured for your device; no published default is implied).
      ReRAM relaxation (``reram_wan2022``, aihwkit ``ReRamWan2022NoiseModel``, fitted to Wan et al.,
        Nature 608, 504 (2022)): G(t) = G_target + sigma_t(g_T) z, sigma_t a 4th-order polynomial of
        g_T in uS for G_max = 40 uS (scaled by G_max / 40 uS), fitted at t = 1 s, 1 day and 2 days only
        (``time_s`` must be one of them); it is the whole deviation from the target at time t
        (programming error included: leave ``variation`` at 0 with it).
      1/f read noise (``read_noise_1f``), drawn per read and cell: G(t) + G(t) sigma_1f z with
        sigma_1f = Q_s sqrt(ln((t + t_read) / (2 t_read))), Q_s = min(0.0088 / max(g_T^0.65, 1e-3), 0.2)
        (``apply_drift_noise_to_conductance``; there it is drawn once per inference time).
    Stuck cells do not drift (they are defects, not programmed states).
    """

    model: Literal["none", "pcm", "power_law", "reram_wan2022"] = "none"
    t0_s: float = Field(
        20.0, gt=0.0, le=1e6, description="first read after programming, seconds (aihwkit t_0; pcm and power_law)"
    )
    nu_mean: float = Field(0.05, ge=0.0, le=1.0, description="power_law: mean drift exponent")
    nu_std: float = Field(0.0, ge=0.0, le=1.0, description="power_law: its standard deviation across cells")
    read_noise_1f: bool = Field(False, description="accumulated 1/f read noise growing with time (aihwkit PCM)")
    t_read_s: float = Field(250e-9, gt=0.0, le=1.0, description="read duration of the 1/f fit, seconds")

    @property
    def enabled(self) -> bool:
        return self.model != "none" or self.read_noise_1f


class UpdateSpec(_Section):
    """Device writes during training on the crossbar (TxSim eq. 1, Sec. IV-C, IV-D)."""

    nonlinearity: float = Field(0.0, ge=0.0, le=100.0, description="update non-linearity factor v (TxSim 0.01-1)")
    write_noise: float = Field(0.0, ge=0.0, le=1000.0, description="write-noise factor gamma (TxSim 1-10)")
    write_noise_units: Literal["normalized", "siemens"] = Field(
        "normalized",
        description="units of TxSim's sigma = gamma sqrt(G_max - G_min) dG_ideal: conductances as "
        "fractions of G_max (normalized; reproduces TxSim Fig. 10) or literally in siemens (gamma has ~no effect)",
    )
    write_granularity: Literal["example", "batch"] = Field(
        "example",
        description="what one device write is: each example's rank-1 outer product x_b delta_b (TxSim's "
        "parallel update; the independent noises of a batch's writes add in variance) or the whole "
        "batch step written once (needed with momentum: the digital accumulator is written per batch)",
    )
    weight_range: float = Field(
        1.0,
        gt=0.0,
        le=1e3,
        description="W_max = weight_range x the largest |w| of the "
        "layer in native (float) training of the same recipe (TxSim's weight statistics)",
    )
    pair: Literal["direct", "balanced"] = Field(
        "direct",
        description="initial pair: direct (the inactive device at G_min, PytorX eq. 9 / TxSim's separate "
        "positive and negative crossbars) or balanced (both around the mid conductance)",
    )
    refresh_every: int = Field(
        1, ge=1, le=1_000_000, description="exact IR-drop solve every L updates (interpolated between)"
    )


# Device presets: published parameter sets, filled in under whatever the spec gives explicitly.
PRESETS: dict[str, dict] = {
    # PytorX Table 1 (He et al., DAC 2019): 64 x 64, 1/3 MOhm .. 1/3 kOhm, 7-bit cells, 8-bit DAC/ADC,
    # V_dd - V_ref = 1.63 V, 300 K, RTN fit a, b (eq. 3). These are also the defaults.
    "pytorx_table1": {
        "crossbar": {"rows": 64, "cols": 64},
        "device": {"g_min_s": 1.0 / 3.0e6, "g_max_s": 1.0 / 3.0e3, "bits_per_cell": 7},
        "input": {"input_bits": 8, "dac_bits": 8, "v_read_v": 1.63},
        "adc": {"bits": 8},
        "temperature_k": 300.0,
        "rtn": {"a": 1.662e-7, "b": 0.0015},
    },
    # TxSim (Roy et al.): R_min 100 kOhm, R_max 1 MOhm, 64 x 64 tiles, r_row 1 Ohm, r_col 4.6 Ohm per cell.
    "txsim": {
        "crossbar": {"rows": 64, "cols": 64},
        "device": {"g_min_s": 1e-6, "g_max_s": 1e-5},
        "ir_drop": {"r_row_ohm": 1.0, "r_col_ohm": 4.6},
    },
    # aihwkit PCMLikeNoiseModel with its default SinglePairConductanceConverter: G in [0, 25 uS], its programming
    # noise polynomial, PCM drift (t0 = 20 s) and accumulated 1/f noise (t_read = 250 ns); set hardware.time_s.
    "pcm_ibm": {
        "device": {"g_min_s": 0.0, "g_max_s": 25e-6},
        "variation": {"sigma_poly_us": [0.26348, 1.9650, -1.1731], "poly_g_max_ref_us": 25.0},
        "drift": {"model": "pcm", "t0_s": 20.0, "read_noise_1f": True, "t_read_s": 250e-9},
    },
    # aihwkit ReRamWan2022NoiseModel (Wan et al., Nature 2022): G in [0, 40 uS] (the fit's reference G_max),
    # relaxation fitted at 1 s, 1 day and 2 days; set hardware.time_s to one of them.
    "reram_wan2022": {"device": {"g_min_s": 0.0, "g_max_s": 40e-6}, "drift": {"model": "reram_wan2022"}},
}


def _under(preset: dict, given: dict) -> dict:
    """``given`` merged over ``preset`` (nested sections merged key by key; the spec wins)."""
    out = dict(preset)
    for k, v in given.items():
        out[k] = _under(preset[k], v) if isinstance(v, dict) and isinstance(preset.get(k), dict) else v
    return out


class HardwareSpec(_Section):
    """The whole crossbar accelerator: geometry, device, mapping, periphery, non-idealities.

    ``device.preset`` fills in a published parameter set (:data:`PRESETS`, each cited there) under
    the fields the spec gives explicitly; the resolved values are what every trial uses and what
    ``xbar-sweep validate`` prints.
    """

    crossbar: CrossbarGeometry = Field(default_factory=CrossbarGeometry)
    device: DeviceSpec = Field(default_factory=DeviceSpec)
    mapping: MappingSpec = Field(default_factory=MappingSpec)
    input: InputSpec = Field(default_factory=InputSpec)
    adc: ADCSpec = Field(default_factory=ADCSpec)
    frequency_hz: float = Field(1.0e8, gt=0.0, le=1.0e12, description="read frequency f")
    temperature_k: float = Field(300.0, gt=0.0, le=1000.0, description="temperature T")
    faults: StuckAtFaults = Field(default_factory=StuckAtFaults)
    variation: ProgrammingVariation = Field(default_factory=ProgrammingVariation)
    read_noise: ThermalShotNoise = Field(default_factory=ThermalShotNoise)
    rtn: TelegraphNoise = Field(default_factory=TelegraphNoise)
    read_fluctuation: ReadFluctuation = Field(default_factory=ReadFluctuation)
    column_awgn: ColumnAWGN = Field(default_factory=ColumnAWGN)
    ir_drop: IRDrop = Field(default_factory=IRDrop)
    dac_loading: DACLoading = Field(default_factory=DACLoading)
    iv: NonlinearIV = Field(default_factory=NonlinearIV)
    time_s: float | None = Field(
        None,
        gt=0.0,
        le=1e10,
        description="inference time since programming, seconds "
        "(drift and 1/f noise); None: read right after programming, no drift",
    )
    drift: DriftSpec = Field(default_factory=DriftSpec)
    update: UpdateSpec = Field(default_factory=UpdateSpec)

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: object) -> object:
        if not isinstance(data, dict) or not isinstance(data.get("device"), dict) or "preset" not in data["device"]:
            return data
        device = dict(data["device"])
        name = device.pop("preset")
        if name not in PRESETS:
            raise ValueError(f"hardware.device.preset must be one of {sorted(PRESETS)} (got {name!r})")
        preset = PRESETS[name]
        given = data.get("variation")
        given_var: dict = given if isinstance(given, dict) else {}
        if any(k in given_var for k in ("sigma_abs_s", "sigma_abs_delta_g")) and "sigma_poly_us" not in given_var:
            # an explicit absolute sigma replaces the preset's level-dependent one (one absolute term)
            var = {
                k: v for k, v in preset.get("variation", {}).items() if k not in ("sigma_poly_us", "poly_g_max_ref_us")
            }
            preset = {**preset, "variation": var}
        return _under(preset, {**data, "device": device})

    @model_validator(mode="after")
    def _consistent(self) -> HardwareSpec:
        slices = self.slices
        if self.mapping.realisation == "differential" and self.crossbar.cols < slices:
            raise ValueError(
                f"hardware.crossbar.cols must be >= {slices} (one weight needs {slices} cells "
                f"of {self.device.bits_per_cell} bits); got {self.crossbar.cols}"
            )
        if self.mapping.realisation == "offset" and self.crossbar.cols < 2 * slices:
            raise ValueError(
                f"hardware.crossbar.cols must be >= {2 * slices} for the offset realisation "
                f"({slices} data + {slices} reference columns); got {self.crossbar.cols}"
            )
        if self.drift.enabled and self.time_s is None:
            raise ValueError(
                "hardware.drift: drift and 1/f noise act at hardware.time_s; set it (seconds since "
                "programming, e.g. 3600)"
            )
        if self.time_s is not None and not self.drift.enabled:
            raise ValueError(
                "hardware.time_s: has no effect without hardware.drift.model (pcm, power_law or "
                "reram_wan2022) or hardware.drift.read_noise_1f"
            )
        if self.drift.model == "reram_wan2022":
            if self.time_s not in RERAM_WAN2022_TIMES:
                raise ValueError(
                    f"hardware.time_s: drift.model reram_wan2022 is fitted at {sorted(RERAM_WAN2022_TIMES)} s "
                    f"only (got {self.time_s})"
                )
            if self.drift.read_noise_1f:
                raise ValueError(
                    "hardware.drift.read_noise_1f: the 1/f fit is aihwkit's PCM one; Wan et al. give no "
                    "separate read-noise data for reram_wan2022"
                )
        reference = DriftSpec()
        uses_t0 = self.drift.model in ("pcm", "power_law") or self.drift.read_noise_1f
        if self.drift.t0_s != reference.t0_s and not uses_t0:
            raise ValueError(
                "hardware.drift.t0_s: only pcm, power_law and read_noise_1f count time from t0 "
                f"(drift.model is {self.drift.model!r})"
            )
        if self.drift.t_read_s != reference.t_read_s and not self.drift.read_noise_1f:
            raise ValueError("hardware.drift.t_read_s: only with hardware.drift.read_noise_1f")
        if self.drift.model != "power_law" and (self.drift.nu_mean != 0.05 or self.drift.nu_std != 0.0):
            raise ValueError(
                "hardware.drift.nu_mean/nu_std: only for drift.model: power_law (pcm derives nu "
                "from the programmed level)"
            )
        self._check_iv()
        if self.rtn.enabled:
            floor = self.rtn.a / (1.0 - self.rtn.b)
            if self.device.g_min_s <= floor:
                raise ValueError(
                    f"hardware.device.g_min_s must be > a/(1-b) = {floor:g} S for the RTN fit "
                    f"of PytorX eq. 3 to be defined (got {self.device.g_min_s:g} S)"
                )
        return self

    def _check_iv(self) -> None:
        iv, ref = self.iv, NonlinearIV()
        if iv.model == "linear":
            for name in ("v0_v", "newton_rtol", "newton_max_iter"):
                if getattr(iv, name) != getattr(ref, name):
                    raise ValueError(f"hardware.iv.{name}: only with iv.model: sinh (the cells are linear)")
            return
        newton = self.ir_drop.enabled and self.ir_drop.model == "exact"
        if not newton and (iv.newton_rtol != ref.newton_rtol or iv.newton_max_iter != ref.newton_max_iter):
            raise ValueError(
                "hardware.iv.newton_rtol/newton_max_iter: only with hardware.ir_drop enabled and "
                "model: exact (without wires every cell sees its row voltage; nothing is iterated)"
            )
        if self.ir_drop.enabled and self.ir_drop.model == "path":
            raise ValueError(
                "hardware.ir_drop.model: path is a linear approximation; use model: exact with iv.model: sinh"
            )
        if self.dac_loading.enabled:
            raise ValueError(
                "hardware.dac_loading: RxNN's divider assumes linear loads; it cannot be combined with iv.model: sinh"
            )
        if self.input.v_read_v / iv.v0_v > 40:
            raise ValueError(
                f"hardware.iv.v0_v must be >= input.v_read_v / 40 = {self.input.v_read_v / 40:g} V "
                f"(sinh(V/V_0) beyond e^40 is no device; got v0_v={iv.v0_v:g} V)"
            )

    # Derived quantities -------------------------------------------------------------------
    @property
    def slices(self) -> int:
        """Cells per weight: ceil((weight_bits - 1) / bits_per_cell) for the magnitude of a
        differential pair; ceil(weight_bits / bits_per_cell) for the offset value w_hat + M,
        which spans [0, 2M]."""
        bits = self.mapping.magnitude_bits if self.mapping.realisation == "differential" else self.mapping.weight_bits
        return math.ceil(bits / self.device.bits_per_cell)

    @property
    def arrays(self) -> int:
        """2 for a differential pair, 1 for the offset realisation."""
        return 2 if self.mapping.realisation == "differential" else 1

    @property
    def weights_per_tile_col(self) -> int:
        """Weight columns that fit in one tile (reference columns excluded)."""
        if self.mapping.realisation == "differential":
            return self.crossbar.cols // self.slices
        return (self.crossbar.cols - self.slices) // self.slices

    @property
    def drift_time_factor(self) -> float:
        """t / t0 with t = time_s + t0 (1 when no time is set)."""
        return 1.0 if self.time_s is None else (self.time_s + self.drift.t0_s) / self.drift.t0_s

    @property
    def any_read_noise(self) -> bool:
        """True when a read draws noise: any per-read effect of ``engine.nonideal.READ_EFFECTS`` in use."""
        from .nonideal import READ_EFFECTS  # the effects import this module

        return any(e.used(self) for e in READ_EFFECTS)

    def mapping_key(self) -> dict:
        """The fields that fix quantisation, tiling and calibration (not the non-idealities)."""
        return {
            "crossbar": self.crossbar.model_dump(),
            "device": self.device.model_dump(),
            "mapping": self.mapping.model_dump(),
            "input": self.input.model_dump(),
            "adc": self.adc.model_dump(),
        }


# Which fields each kind of trial honours -------------------------------------------------------
# Crossbar training (engine.training, TxSim) programs continuous conductance pairs and reads them with
# the inference read (engine.crossbar.CrossbarLayer.read): every hardware field acts on it except these
# (prefixes end with "."), refused for kind: train with the reason rather than ignored.
_ONE_PAIR = (
    "crossbar training holds each weight as one analog conductance pair (TxSim Sec. IV); weight slices "
    "and conductance levels have no update rule"
)
_NO_DRIFT = "crossbar training writes the devices continuously; drift acts after programming, at inference"
NOT_TRAINED = {
    "device.bits_per_cell": _ONE_PAIR,
    "mapping.weight_bits": _ONE_PAIR,
    "mapping.realisation": "crossbar training writes a differential pair per weight (TxSim's positive and negative "
    "crossbars)",
    "adc.calibration_batches": "crossbar training fits the ADC range to each training batch (PytorX Alg. 1), "
    "not to calibration batches",
    "iv.": "crossbar training reads linear cells: the transposed backward read of a non-linear network is not modelled",
    "time_s": _NO_DRIFT,
    "drift.": _NO_DRIFT,
}


def _not_trained(name: str) -> str | None:
    return next((why for p, why in NOT_TRAINED.items() if (name.startswith(p) if p.endswith(".") else name == p)), None)


def _flat(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@functools.cache
def _default_values() -> dict[str, object]:
    return _flat(HardwareSpec().model_dump())


def changed_values(hw: HardwareSpec) -> dict[str, object]:
    """Dotted name (under ``hardware.``) -> value of every field that differs from its default."""
    ref = _default_values()
    return {k: v for k, v in _flat(hw.model_dump()).items() if ref.get(k) != v}


def changed_fields(hw: HardwareSpec) -> list[str]:
    return list(changed_values(hw))


def unused_fields(hw: HardwareSpec, kind: str) -> list[tuple[str, str]]:
    """(dotted field, why) for every field set away from its default that a ``kind`` trial would not
    use: a setting that cannot change a result is refused, never silently accepted."""
    out = []
    for name in changed_fields(hw):
        if kind == "train" and (why := _not_trained(name)) is not None:
            out.append((name, why))
        elif kind != "train" and name.startswith("update."):
            out.append((name, "device writes only happen in crossbar training (kind: train)"))
        elif name in ("update.write_granularity", "update.write_noise_units") and hw.update.write_noise == 0:
            out.append((name, "it shapes the write noise only: set update.write_noise > 0"))
        elif (why := _inert_without_its_effect(hw, name)) is not None:
            out.append((name, why))
    return out


def _inert_without_its_effect(hw: HardwareSpec, name: str) -> str | None:
    """Why a per-read noise parameter changes nothing on this hardware (None: it acts). They are read
    only by their effect (engine.nonideal.READ_EFFECTS); the DAC voltage also sets the sinh I-V's scale
    and a given ADC full scale in amperes."""
    if name.startswith("rtn.") and name != "rtn.enabled" and not hw.rtn.enabled:
        return "it shapes telegraph noise only: set rtn.enabled: true"
    if name in ("frequency_hz", "temperature_k") and not hw.read_noise.enabled:
        return "it sets thermal/shot read noise only: set read_noise.enabled: true"
    if name == "adc.range_scope" and hw.slices == 1:
        return "with one weight slice the per-slice range is the layer range: it acts with several slices"
    volts = hw.read_noise.enabled or hw.iv.model == "sinh" or hw.adc.full_scale_a is not None
    if name == "input.v_read_v" and not volts:
        return "volts matter only to read noise, the sinh I-V and adc.full_scale_a: none is set"
    return None


def check_write_granularity(hw: HardwareSpec, momentum: float) -> None:
    """Per-example writes exist only in plain SGD: a momentum accumulator is written once per batch."""
    up = hw.update
    if up.write_noise > 0 and up.write_granularity == "example" and momentum > 0:
        raise ValueError(
            "hardware.update.write_granularity: 'example' (each example's rank-1 write) needs training.momentum "
            f"0 (TxSim's plain SGD; got {momentum}): a momentum accumulator is written once per batch - set "
            "write_granularity: batch, or momentum: 0"
        )
