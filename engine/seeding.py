"""Seed derivation: one integer instance seed -> every random stream of a hardware instance.

The derivation is documented because users must be able to reproduce any row by hand:

* **Static draws** (made once per instance, when it is programmed): the counter-based generator of
  :mod:`engine.counter_rng`, keyed by (instance seed, layer index, stream) and indexed by the cell's
  position in the layer's canonical layout (arrays, groups, t_r, t_c, rows, cols). Each static
  effect declares its streams (``engine.nonideal``, ``StaticEffect.streams``): 0 faults (one 32-bit
  uniform per cell), 1 absolute-variation normal, 4 relative-variation normal, 5 the normal behind
  each cell's drift exponent. Evaluated on the model's
  device, with the same bits on every device (normals included); the draws of layer 3 do not depend on how
  many layers, instances or batches were sampled before it.
* **Per-read noise** (:data:`READ_NOISE`) and training write noise (:data:`WRITE_NOISE`): a torch
  generator per instance seeded from ``numpy.random.SeedSequence(entropy=seed, spawn_key=(layer, kind))``,
  restarted at every evaluation. These streams are device-specific (torch's CPU and CUDA generators
  differ), so per-read noise is reproducible per device type.

A stream is drawn only when its term is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# Per-read and write-noise generator streams (the static streams 0, 1, 4, 5 are declared by their effects).
READ_NOISE = 2
WRITE_NOISE = 3

# Version of the static-draw derivation above; every sweep point id includes it, so rows drawn
# under another scheme are never mixed into a resumed sweep. 2: one numpy stream per variation
# term. 3: counter-based draws on the model's device (engine.counter_rng). 4: normals from integer
# and correctly rounded float32 operations only (counter_rng.box_muller): the same bits on every
# device and compiler.
DRAW_SCHEME = 4


def stream(seed: int, layer_index: int, kind: int) -> np.random.SeedSequence:
    if seed < 0:
        raise ValueError(f"instance seed must be >= 0 (got {seed})")
    return np.random.SeedSequence(entropy=int(seed), spawn_key=(int(layer_index), int(kind)))


def torch_generator(seed: int, layer_index: int, kind: int, device: torch.device) -> torch.Generator:
    """Device-local torch generator for per-read noise, seeded from the derivation above."""
    import torch

    state = stream(seed, layer_index, kind).generate_state(1, dtype=np.uint64)[0]
    gen = torch.Generator(device=device)
    gen.manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)
    return gen
