"""Benchmarks of cosinekit against the one-pass limit and its peers.

``python benchmarks/run.py`` (or ``nox -s bench``) runs them; ``--quick`` runs
every case at small sizes as a smoke test; ``--cases training,small`` runs
some topics only (``--kinds`` is the same option). The modules:

* ``run.py``: the command line. Fixes the thread count (``--threads``),
  measures each library in a child process of its own, then prints the
  ratio table and the target report and writes the JSON and the plot.
* ``backends.py``: one description per array library, device and mode
  (:class:`~benchmarks.backends.Backend`): how to make arrays, wait for a
  result, compile a function (``jax.jit``, ``torch.compile``), take a
  training-step gradient, the candidate row dots of the one-pass limit, the
  library's own top-k, and ``library``, the key of its peers. Cases read
  these fields; nothing branches on a backend's name.
* ``peers.py``: the other libraries' implementations, in tables keyed by
  ``Backend.library`` (``"numpy"``, ``"torch"``, ``"jax"``, ``"cupy"``).
* ``harness.py``: the data types (``Case``, ``Result``, ``Target``,
  ``Topic``, ``Timing``), helpers that build inputs and cases, and the
  timing loop.
* ``report.py``: the ratio table, the target report, the JSON and the plot.
* ``topics/``: one module per topic, each exporting ``TOPIC``;
  ``topics/__init__.py`` lists them in the order they run.

Adding a topic
--------------
1. Write ``benchmarks/topics/<name>.py`` defining:

   * ``cases(backend, quick) -> list[Case]``: the cases on one backend,
     with full and quick sizes of the topic's own (``[]`` where the topic
     does not apply, for example ``backend.gradient is None``). A case is
     our call, the limit (one function, or a dict of candidates of which
     the fastest counts) and the peers, all already wrapped with
     ``backend.compile`` (or ``backend.gradient``), plus an ``inputs()``
     that makes fresh random arrays with ``backend.array``
     (``harness.random_pair``, ``harness.row_pair_cases``).
   * its peers, as a ``peers.PeerTable`` (``{library: {name: factory}}``,
     the factory imports the peer and returns the function) resolved with
     ``peers.resolve(TABLE, backend)``; a peer that does not import is
     skipped.
   * its targets (optional): ``Target(description, case, backend name,
     ratio, bar, at_most=..., ambition=..., shape=...)`` where ``ratio`` is
     ``"x limit"``, ``"x PEER"`` (our time over the peer's) or
     ``"speedup vs PEER"``.
   * ``TOPIC = Topic("<name>", cases, TARGETS)``; pass
     ``modes=frozenset({"compile"})`` for ``torch.compile`` backends, the
     default runs it on the eager and jit ones.

2. Add one line, ``"<name>",``, to ``TOPIC_MODULES`` in
   ``benchmarks/topics/__init__.py``.

``python benchmarks/run.py --cases <name>`` then runs it alone, ``--quick``
includes it (keep its quick sizes small: the smoke test runs every topic),
and the target report prints its targets.
"""

import os

THREADS = int(os.environ.get("COSINEKIT_BENCH_THREADS", "2"))
"""Threads for every library (``run.py --threads``): ratios compare at one thread count."""
