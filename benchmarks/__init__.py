"""Benchmarks of cosinekit against the one-pass limit and its peers.

``python benchmarks/run.py`` (or ``nox -s bench``) runs them; ``--quick`` runs
every case at small sizes as a smoke test. The modules:

* ``run.py``: the command line. Fixes the thread count, picks the backends
  and topics, measures, prints and writes the results.
* ``backends.py``: one description per array library and device
  (:class:`~benchmarks.backends.Backend`): how to make arrays, wait for a
  result, compile a function, take a training-step gradient, the one-pass
  row dot and the library's own top-k. Cases read these fields; nothing
  branches on a backend's name.
* ``peers.py``: the other libraries' implementations, in tables keyed by
  ``Backend.library`` (``"numpy"``, ``"torch"``, ``"jax"``, ``"cupy"``).
* ``harness.py``: the data types (``Case``, ``Result``, ``Target``,
  ``Topic``) and the timing loop.
* ``report.py``: the ratio table, the target report, the JSON and the plot.
* ``topics/``: one module per topic (row-wise, pairwise, ...), each
  exporting ``TOPIC``; ``topics/__init__.py`` lists them.

Adding a topic
--------------
1. Write ``benchmarks/topics/<name>.py`` that defines the case builder
   ``cases(backend, quick) -> list[Case]`` (full and quick sizes of its
   own; return ``[]`` for a backend it does not apply to), its peer tables
   (``PeerTable``, resolved with ``peers.resolve``), its targets (``Target``
   tuples, optional) and ``TOPIC = Topic("<name>", cases, targets)``.
2. Add one line, ``"<name>",``, to ``TOPIC_MODULES`` in
   ``benchmarks/topics/__init__.py``.

``python benchmarks/run.py --cases <name>`` then runs it alone, ``--quick``
includes it, and the target report prints its targets.
"""

THREADS = 2
"""Threads for every library: ratios are comparable only at one thread count."""
