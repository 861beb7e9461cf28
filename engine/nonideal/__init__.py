"""One module per non-ideality: static draws (faults, variation) and per-read noise."""
