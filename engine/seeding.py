"""Seed derivation: one integer instance seed -> every random stream of a hardware instance.

The derivation is documented because users must be able to reproduce any row:

    stream(seed, layer_index, kind) = numpy.random.SeedSequence(entropy=seed,
                                                                spawn_key=(layer_index, kind))

with ``kind`` one of :data:`FAULTS` (one uniform per cell), :data:`VARIATION` (absolute-variation
normal per cell), :data:`VARIATION_REL` (relative-variation normal per cell), :data:`READ_NOISE`,
:data:`WRITE_NOISE` (training). A stream is drawn only when its term is used. A spawn key
addresses a child stream directly, so the draws of layer 3 do not depend on how many
layers, instances or batches were sampled before it, nor on the device the model runs on
(static draws are made on the CPU with PCG64 and then moved).
"""

from __future__ import annotations

import numpy as np
import torch

FAULTS = 0
VARIATION = 1
READ_NOISE = 2
WRITE_NOISE = 3
VARIATION_REL = 4

# Version of the static-draw derivation above; every sweep point id includes it, so rows drawn
# under another scheme are never mixed into a resumed sweep. 2: one stream per variation term.
DRAW_SCHEME = 2


def stream(seed: int, layer_index: int, kind: int) -> np.random.SeedSequence:
    if seed < 0:
        raise ValueError(f"instance seed must be >= 0 (got {seed})")
    return np.random.SeedSequence(entropy=int(seed), spawn_key=(int(layer_index), int(kind)))


def numpy_generator(seed: int, layer_index: int, kind: int) -> np.random.Generator:
    """PCG64 generator for the static draws (fault uniforms, variation normals)."""
    return np.random.Generator(np.random.PCG64(stream(seed, layer_index, kind)))


def torch_generator(seed: int, layer_index: int, kind: int, device: torch.device) -> torch.Generator:
    """Device-local torch generator for per-read noise, seeded from the same derivation."""
    state = stream(seed, layer_index, kind).generate_state(1, dtype=np.uint64)[0]
    gen = torch.Generator(device=device)
    gen.manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)
    return gen
