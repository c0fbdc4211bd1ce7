"""Private building blocks: validation, the numerics kernels, the strategy point."""
