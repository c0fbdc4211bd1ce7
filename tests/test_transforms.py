"""Every public function under every transform of its backend, each array argument traced in turn.

One matrix, driven by the capability table (`CAPABILITIES`: ``arrays``,
``differentiable``, ``shape``, ``dask``, ``backends``). ``_calls.ROWS``
holds one row per way to call a function (its plain row, and variants
where an option changes the path); `_references` holds the float64 NumPy
formula with the same signature. For each row and each *position* (one
array argument traced while the others are concrete constants, closed
over or not batched; then all at once):

* JAX: one ``jax.jit`` program per position returns the value,
  ``jax.value_and_grad`` of it and ``jax.vmap`` of it, so ``jit``,
  ``jit(grad)`` and ``jit(vmap)`` share one compilation (made with XLA's
  backend optimizations off: these tests are about tracing, not code
  generation). Un-jitted ``jax.value_and_grad`` (``jax.grad`` is it with the
  value dropped: JAX defines it so) and ``jax.vmap`` run operation by
  operation, once per function with every argument traced.
* PyTorch: ``torch.compile(fullgraph=True)`` without a gradient (Dynamo's
  ``eager`` backend), with gradients per position (`test_torch_compile_backward`
  says which backend where), ``torch.func.grad``, ``torch.func.vmap`` and
  eager autograd; two ``inductor`` cases compile for real.
* Dask: every argument lazy; nothing is computed before it is asked for.

Values must equal the float64 reference, gradients the central finite
difference of the reference along a random direction. Functions whose
result shape depends on values (``Shape.VALUES``) have their own tests: a
``TypeError`` naming the function under every JAX transform and
``torch.func``, a graph break under ``torch.compile`` that returns the
eager result (``fullgraph=True`` fails), eager autograd, and lazy results
of unknown length on Dask.

Embedding inputs hold ordinary rows, a zero row (1) and a row of
magnitude 1e-200 (2, whose squares underflow), so the zero-vector handling
and the rescaled path run under every transform; the finite-difference
directions leave those two rows alone (the derivative at a zero row is the
subgradient 0; a step of 1e-6 would swamp the 1e-200 row).

Each ``torch.compile`` here compiles a copy of its function with a code
object of its own (`_matrix.compile_copy`): Dynamo's per-code cache then never fills
up, no test depends on an earlier one, and no ``torch._dynamo.reset()`` is
needed between tests.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import pytest

import _references
import cosinekit as ck
from _calls import CONTRASTIVE, ROWS, Row
from _matrix import (
    XLA_QUICK,
    as_tuple,
    bind,
    check_gradient,
    check_values,
    compile_copy,
    floating_sum,
    on,
    plain,
    positions,
    reference_total,
    requiring_grad,
    stacked_reference,
    two_batches,
)
from _support import asarray, counting_dask_computes, to_numpy
from cosinekit._lib._capabilities import CAPABILITIES, Dask, Shape

Array = Any
FIXED, VALUES = Shape.FIXED, Shape.VALUES

# --- The table is complete -------------------------------------------------------


@pytest.mark.backend_free
def test_every_public_function_has_rows_passing_every_array_argument() -> None:
    missing = set(CAPABILITIES) - {row.function for row in ROWS}
    assert not missing, (
        f"{sorted(missing)}: add rows to tests/_calls.py (ROWS) and references to "
        "tests/_references.py"
    )
    assert {row.function for row in ROWS} <= set(CAPABILITIES)
    for name, found in CAPABILITIES.items():
        passed = {n for row in ROWS if row.function == name for n in row.names}
        assert passed == set(found.arrays), f"{name}: rows pass {passed}, the table {found.arrays}"
    assert len({row.id for row in ROWS}) == len(ROWS), "two rows share an id"


# --- JAX -------------------------------------------------------------------------


@on("jax")
@pytest.mark.parametrize(("row", "traced"), positions(FIXED, "jax"))
def test_jax_jit(xp: ModuleType, row: Row, traced: tuple[str, ...]) -> None:
    # One compiled program per position: the value, value_and_grad (where a
    # gradient exists) and vmap, each traced in it, so the three share one
    # compilation. The arguments not traced are concrete arrays closed over.
    import jax

    values = row.values()
    call, arrays = bind(xp, row, traced, values)
    stacked, batches = two_batches(row, traced)
    argnums = row.differentiable(traced)

    def program(arrays: list[Array], stacked: list[Array]) -> Any:
        gradient = (
            jax.value_and_grad(lambda *a: floating_sum(xp, call(*a)), argnums)(*arrays)
            if argnums
            else None
        )
        return call(*arrays), gradient, jax.vmap(call)(*stacked)

    batch = [asarray(xp, s) for s in stacked]
    # XLA's backend optimizations are most of a compilation's time and
    # change nothing traced: the test is about tracing, not code generation.
    compiled = jax.jit(program).lower(arrays, batch).compile(XLA_QUICK)
    value, gradient, batched = compiled(arrays, batch)
    check_values(xp, row, value, row.reference(values))
    check_values(xp, row, batched, stacked_reference(row, batches))
    if gradient is not None:
        total, grads = gradient
        np.testing.assert_allclose(float(total), reference_total(row, values), rtol=row.rtol)
        for i, grad in zip(argnums, grads, strict=True):
            check_gradient(row, values, traced[i], grad)


# Without jit, JAX dispatches operation by operation, compiling each kind
# of operation once: slower than one jit, while cosinekit's code runs the
# same (it sees a JAX trace either way, and each position and variant runs
# under jit above). So these run once per function, every argument traced.


@on("jax")
@pytest.mark.parametrize(
    ("row", "traced"),
    positions(FIXED, "jax", differentiable=True, each="none", variants=False),
)
def test_jax_value_and_grad(xp: ModuleType, row: Row, traced: tuple[str, ...]) -> None:
    # jax.grad is value_and_grad with the value dropped (JAX defines it so).
    import jax

    values = row.values()
    call, arrays = bind(xp, row, traced, values)
    argnums = row.differentiable(traced)
    total, grads = jax.value_and_grad(lambda *a: floating_sum(xp, call(*a)), argnums)(*arrays)
    np.testing.assert_allclose(float(total), reference_total(row, values), rtol=row.rtol)
    for i, grad in zip(argnums, grads, strict=True):
        check_gradient(row, values, traced[i], grad)


@on("jax")
@pytest.mark.parametrize(("row", "traced"), positions(FIXED, "jax", each="none", variants=False))
def test_jax_vmap(xp: ModuleType, row: Row, traced: tuple[str, ...]) -> None:
    import jax

    stacked, batches = two_batches(row, traced)
    call, _ = bind(xp, row, traced, batches[0])
    result = jax.vmap(call)(*(asarray(xp, s) for s in stacked))
    check_values(xp, row, result, stacked_reference(row, batches))


# --- PyTorch ---------------------------------------------------------------------


@on("torch")
@pytest.mark.parametrize(("row", "traced"), positions(FIXED, "torch", each="none"))
def test_torch_compile(xp: ModuleType, row: Row, traced: tuple[str, ...]) -> None:
    # No gradient recorded: inference. Every argument traced at once covers
    # each alone, since Dynamo lifts a closed-over tensor into the graph as
    # an input just as it does an argument; which one is traced matters only
    # for the gradients (test_torch_compile_backward, per position).
    values = row.values()
    call, arrays = bind(xp, row, traced, values)
    compiled = compile_copy(call, fullgraph=True, backend="eager", dynamic=False)
    check_values(xp, row, compiled(*arrays), row.reference(values))


@on("torch")
@pytest.mark.parametrize(
    ("row", "traced"), positions(FIXED, "torch", differentiable=True, each="plain")
)
def test_torch_compile_backward(xp: ModuleType, row: Row, traced: tuple[str, ...]) -> None:
    # One compilation per position gives the value and the gradient. Which
    # arguments require a gradient changes the trace (cosinekit's
    # hand-written backward and what it is asked for), and Dynamo traces
    # that backward with this pattern on either backend. A variant adds no
    # pattern of its own to the kernels' backward (weights, labels, an
    # offset or the symmetric term act before or after them, through plain
    # autograd), so each argument alone is traced in the plain rows, and a
    # variant's with every argument traced; its arguments alone run under
    # torch.func and eager autograd. AOTAutograd's joint trace and partition
    # (aot_eager: what inductor compiles, at several times Dynamo's cost)
    # runs once per function, every argument traced.
    values = row.values()
    call, arrays = bind(xp, row, traced, values)
    argnums = row.differentiable(traced)
    inputs = requiring_grad(arrays, argnums)
    joint = len(traced) == len(row.names) and plain(row)
    backend = "aot_eager" if joint else "eager"
    compiled = compile_copy(call, fullgraph=True, backend=backend, dynamic=False)
    result = compiled(*inputs)
    check_values(xp, row, result, row.reference(values))
    floating_sum(xp, result).backward()
    for i in argnums:
        check_gradient(row, values, traced[i], inputs[i].grad)


@on("torch")
@pytest.mark.parametrize(("row", "traced"), positions(FIXED, "torch", differentiable=True))
def test_torch_func_grad(xp: ModuleType, row: Row, traced: tuple[str, ...]) -> None:
    import torch

    values = row.values()
    call, arrays = bind(xp, row, traced, values)
    argnums = row.differentiable(traced)
    grads, total = torch.func.grad_and_value(lambda *a: floating_sum(xp, call(*a)), argnums)(
        *arrays
    )
    np.testing.assert_allclose(float(total), reference_total(row, values), rtol=row.rtol)
    for i, grad in zip(argnums, grads, strict=True):
        check_gradient(row, values, traced[i], grad)


@on("torch")
@pytest.mark.parametrize(("row", "traced"), positions(FIXED, "torch"))
def test_torch_func_vmap(xp: ModuleType, row: Row, traced: tuple[str, ...]) -> None:
    import torch

    stacked, batches = two_batches(row, traced)
    call, _ = bind(xp, row, traced, batches[0])
    result = torch.func.vmap(call)(*(asarray(xp, s) for s in stacked))
    check_values(xp, row, result, stacked_reference(row, batches))


@on("torch")
@pytest.mark.parametrize(
    ("row", "traced"),
    [
        *positions(FIXED, "torch", differentiable=True),
        *positions(VALUES, "torch", differentiable=True),
    ],
)
def test_torch_autograd(xp: ModuleType, row: Row, traced: tuple[str, ...]) -> None:
    values = row.values()
    call, arrays = bind(xp, row, traced, values)
    argnums = row.differentiable(traced)
    inputs = requiring_grad(arrays, argnums)
    result = call(*inputs)
    check_values(xp, row, result, row.reference(values))
    floating_sum(xp, result).backward()
    for i in argnums:
        check_gradient(row, values, traced[i], inputs[i].grad)


# Inductor once folded a ``0 * x`` NaN flag to 0 and sent the 1e-200 row of
# l2_normalize and the pairwise functions down the fast path: the rows here
# hold that row, so generated kernels must keep the rescaled branch.
INDUCTOR = [
    pytest.param(
        next(r for r in ROWS if r.id == "cosine_similarity"),
        id="cosine_similarity",
    ),
    pytest.param(
        next(r for r in ROWS if r.id == "info_nce_loss-labels"),
        id="info_nce_loss-labels",
    ),
    pytest.param(next(r for r in ROWS if r.id == "l2_normalize"), id="l2_normalize"),
]


@on("torch")
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("row", INDUCTOR)
def test_torch_compile_inductor(xp: ModuleType, row: Row) -> None:
    # Code generation proper (the default backend) for a few rows, every
    # argument traced: forward and backward through generated kernels.
    values = row.values()
    call, arrays = bind(xp, row, row.names, values)
    argnums = row.differentiable(row.names)
    inputs = requiring_grad(arrays, argnums)
    result = compile_copy(call, fullgraph=True, dynamic=False)(*inputs)
    check_values(xp, row, result, row.reference(values))
    floating_sum(xp, result).backward()
    for i in argnums:
        check_gradient(row, values, row.names[i], inputs[i].grad)


# --- Dask ------------------------------------------------------------------------


def _dask_rows() -> list[Any]:
    return [
        pytest.param(row, id=row.id)
        for row in ROWS
        if "dask" in row.capabilities.backends and row.capabilities.dask is not Dask.NONE
    ]


@on("dask")
@pytest.mark.parametrize("row", _dask_rows())
def test_dask(xp: ModuleType, row: Row) -> None:
    import dask
    import dask.array as da

    values = row.values()
    kind = row.capabilities.dask
    with counting_dask_computes() as computes:
        result = row.call({name: asarray(xp, value) for name, value in values.items()})
        outputs = as_tuple(result)
        assert all(isinstance(out, da.Array) for out in outputs)
        if kind is not Dask.COMPUTED:
            assert computes[0] == 0, "building the result computed the graph"
            unknown = [np.isnan(out.shape[0]) if out.ndim else False for out in outputs]
            assert all(unknown) if kind is Dask.LAZY_UNKNOWN_LENGTH else not any(unknown)
            before = computes[0]
            outputs = dask.compute(*outputs)
            assert computes[0] == before + 1
    for got, want in zip(outputs, as_tuple(row.reference(values)), strict=True):
        np.testing.assert_allclose(to_numpy(got), want, rtol=row.rtol, atol=row.atol)


# --- Value-dependent shapes -------------------------------------------------------


@on("jax")
@pytest.mark.parametrize("transform", ["jit", "grad", "vmap"])
@pytest.mark.parametrize(("row", "traced"), positions(VALUES, "jax"))
def test_jax_value_dependent_is_a_type_error(
    xp: ModuleType, row: Row, traced: tuple[str, ...], transform: str
) -> None:
    import jax

    values = row.values()
    call, arrays = bind(xp, row, traced, values)
    if transform == "grad":
        argnums = row.differentiable(traced) or (0,)
        transformed = jax.grad(lambda *a: floating_sum(xp, call(*a)), argnums)
    elif transform == "vmap":
        arrays = [asarray(xp, s) for s in two_batches(row, traced)[0]]
        transformed = jax.vmap(call)
    else:
        transformed = jax.jit(call)
    with pytest.raises(TypeError, match=row.function):
        transformed(*arrays)


@on("torch")
@pytest.mark.parametrize("transform", ["grad", "vmap"])
@pytest.mark.parametrize(("row", "traced"), positions(VALUES, "torch"))
def test_torch_func_value_dependent_is_a_type_error(
    xp: ModuleType, row: Row, traced: tuple[str, ...], transform: str
) -> None:
    import torch

    values = row.values()
    call, arrays = bind(xp, row, traced, values)
    if transform == "grad":
        argnums = row.differentiable(traced) or (0,)
        transformed = torch.func.grad(lambda *a: floating_sum(xp, call(*a)), argnums)
    else:
        arrays = [asarray(xp, s) for s in two_batches(row, traced)[0]]
        transformed = torch.func.vmap(call)
    with pytest.raises(TypeError, match=row.function):
        transformed(*arrays)


@on("torch")
@pytest.mark.parametrize(("row", "traced"), positions(VALUES, "torch"))
def test_torch_compile_value_dependent_is_a_graph_break(
    xp: ModuleType, row: Row, traced: tuple[str, ...]
) -> None:
    import torch

    values = row.values()
    call, arrays = bind(xp, row, traced, values)
    eager = call(*arrays)
    # The graph breaks at the call, which runs eagerly: the eager result.
    result = compile_copy(call, backend="eager", dynamic=False)(*arrays)
    for got, want in zip(as_tuple(result), as_tuple(eager), strict=True):
        assert torch.equal(got, want)
    check_values(xp, row, result, row.reference(values))
    with pytest.raises(Exception, match="disable"):
        compile_copy(call, fullgraph=True, backend="eager", dynamic=False)(*arrays)


# --- Labels out of range under a trace --------------------------------------------


def _out_of_range_case() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Queries, keys, labels with rows 1 and 3 out of range (-1 and m), and the reference."""
    rng = np.random.default_rng(7)
    q, k = rng.standard_normal((4, 3)), rng.standard_normal((5, 3))
    labels = np.array([2, -1, 0, 5])
    logits = _references.pairwise_cosine_similarity(q, k) / 0.5
    rows = np.arange(4)
    expected = _references._lse(logits, 1) - logits[rows, np.clip(labels, 0, 4)]
    expected[[1, 3]] = np.nan
    return q, k, labels, expected


def _per_query(q: Array, k: Array, labels: Array) -> Array:
    return ck.info_nce_loss(q, k, labels=labels, temperature=0.5, reduction="none")


@on("jax")
def test_labels_out_of_range_give_nan_rows_under_jit(xp: ModuleType) -> None:
    import jax

    q, k, labels, expected = _out_of_range_case()
    got = jax.jit(_per_query)(asarray(xp, q), asarray(xp, k), asarray(xp, labels))
    np.testing.assert_allclose(np.asarray(got), expected, **CONTRASTIVE)
    # The rows with a valid label keep finite gradients.
    grad = jax.grad(lambda q: xp.nansum(_per_query(q, asarray(xp, k), asarray(xp, labels))))(
        asarray(xp, q)
    )
    assert np.isfinite(np.asarray(grad)).all()


@on("torch")
def test_labels_out_of_range_give_nan_rows_under_torch_compile(xp: ModuleType) -> None:
    q, k, labels, expected = _out_of_range_case()
    compiled = compile_copy(_per_query, fullgraph=True, backend="eager")
    got = compiled(asarray(xp, q), asarray(xp, k), asarray(xp, labels))
    np.testing.assert_allclose(to_numpy(got), expected, **CONTRASTIVE)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        _per_query(asarray(xp, q), asarray(xp, k), asarray(xp, labels))
