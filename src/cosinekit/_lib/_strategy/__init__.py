"""The one strategy point: everything that depends on which array library runs.

The rest of cosinekit is written against the array API standard only, and
reads its decisions from here. The standard lacks what exact and fast cosine
needs below; each part is covered by the same tests on every backend, and
nothing outside this package asks which library it runs on (a lint rule:
``array_api_compat.is_*_namespace`` is banned elsewhere in ``src``).

``mode``
    How a call may run, resolved once per call from all its array arguments
    (`mode.Mode`): eager (value-dependent shapes allowed), host reads free,
    lazy, and which autodiff records it; devices checked.
``namespaces``
    Default dtypes (index, real floating) without
    ``__array_namespace_info__`` where ``torch.compile`` cannot trace it.
``autodiff``
    Stop-gradient, straight-through clipping, hand-written derivatives
    (a PyTorch backward, a JAX jvp rule) and a conditional that runs inside
    a trace.
``rows``
    Row reductions (dot, norm, the fast path's three sums and its one range
    check) and the log-softmax parts, each in its fastest form.
``inplace``
    In-place writes into fresh results, where the library and the mode
    allow them (memory of the pairwise results).
``select``
    Top-k primitives and whether a search prunes by value.
``dask``
    The searches on Dask: one task per pair of chunks, with the chunk's
    own eager kernel.
"""
