"""Memory of the contrastive losses: CoSENT in O(n), NT-Xent in O(n^2 + n d).

Memory, unlike time, is deterministic, so these bounds are tests:
``tracemalloc`` counts every NumPy allocation, and XLA reports the
temporary buffers of a compiled function.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import cosinekit as ck

MIB = 2**20


@pytest.mark.backend_free  # NumPy arrays only: tracemalloc sees NumPy's allocations
def test_cosent_peak_memory_is_linear_at_n_20000() -> None:
    n, d = 20_000, 64
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((n, d), dtype=np.float32)
    x2 = rng.standard_normal((n, d), dtype=np.float32)
    scores = rng.integers(0, 6, n).astype(np.float32)
    ck.cosent_loss(x1[:10], x2[:10], scores[:10])  # imports and caches outside the count
    tracemalloc.start()
    try:
        loss = ck.cosent_loss(x1, x2, scores)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.isfinite(loss)
    # The n x n form needs n * n * 4 bytes = 1.5 GiB for one float32 matrix.
    assert peak < 64 * MIB, f"peak {peak / MIB:.1f} MiB"


@pytest.mark.backends("jax")
def test_ntxent_memory_under_jit_is_quadratic_not_cubic() -> None:
    import jax
    import jax.numpy as jnp
    import optax

    n, d = 1024, 256
    x = jnp.zeros((n, d), dtype=jnp.float32)
    labels = jnp.concatenate([jnp.arange(n // 2), jnp.arange(n // 2)])

    def temporary_bytes(fn: object) -> int:
        compiled = jax.jit(fn).lower(x, labels).compile()
        analysis = compiled.memory_analysis()
        if analysis is None:
            pytest.skip("this XLA backend reports no memory analysis")
        return int(analysis.temp_size_in_bytes)

    ours = temporary_bytes(ck.ntxent_loss)
    square = n * n * 4
    # A few (n, n) buffers and the (n, d) unit rows: O(n^2 + n d), far below
    # the (n, n, d) product (256 n^2 floats here) that optax.ntxent writes
    # out eagerly; under jit XLA fuses optax's product into its reduction.
    assert ours <= 8 * square + 4 * n * d * 4, f"{ours / MIB:.1f} MiB"
    assert temporary_bytes(optax.ntxent) < n * n * d * 4
