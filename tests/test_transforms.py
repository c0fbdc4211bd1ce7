"""Every public function under every transform of its backend, each array argument traced in turn.

One matrix, driven by the capability table (`CAPABILITIES`: ``arrays``,
``differentiable``, ``shape``, ``dask``, ``backends``). ``_calls.ROWS``
holds one entry per public function (several where an option changes the
path); a row names the function, the inputs of its array arguments and
its options, and `_references` holds a float64 NumPy formula with the
same signature. For each row and each *position* (one array argument traced,
the others concrete constants closed over or not batched, then all at
once), under:

* JAX: ``jax.jit`` of one program returning the value and
  ``jax.value_and_grad`` of it (so the forward and ``jit(grad)`` share one
  compilation), eager ``jax.value_and_grad`` (``jax.grad`` is it with the
  value dropped: JAX defines it so) and ``jax.vmap``;
* PyTorch: ``torch.compile(fullgraph=True)`` forward (Dynamo's ``eager``
  backend: the test is about tracing, not code generation) and backward
  (``aot_eager``: AOTAutograd traces the backward), ``torch.func.grad``,
  ``torch.func.vmap`` and eager autograd; a few ``inductor`` cases;
* Dask: every argument lazy; nothing is computed before asked,

values must equal the float64 reference, and every gradient must equal the
central finite difference of the reference along a random direction.
Functions whose result shape depends on values (``Shape.VALUES``) have
their own rows: a ``TypeError`` naming the function under every JAX
transform and ``torch.func``, a graph break under ``torch.compile`` that
returns the eager result (``fullgraph=True`` fails), and lazy results of
unknown length on Dask.

Embedding inputs hold ordinary rows, a zero row (1) and a row of
magnitude 1e-200 (2, whose squares underflow), so the zero-vector handling
and the rescaled path run under every transform; the finite-difference
directions leave those two rows alone (the derivative at a zero row is the
subgradient 0; a step of 1e-6 would swamp the 1e-200 row).

Compiled functions are built once per (row, position, transform) and
never shared by guard: each gets a code object of its own (`_compiled`),
so Dynamo's per-code cache never fills up, no test depends on an earlier
one, and no ``torch._dynamo.reset()`` is needed between tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import FunctionType, ModuleType
from typing import Any

import array_api_compat
import numpy as np
import pytest

import _references
import cosinekit as ck
from _calls import CONTRASTIVE, ROWS, Row
from _support import Backend, asarray, counting_dask_computes, to_numpy
from cosinekit._lib._capabilities import CAPABILITIES, Dask, Shape

Array = Any

#: Finite differences: the step is 1e-6 times the argument's magnitude.
FD_TOL = {"rtol": 1e-6, "atol": 1e-8}


# --- The table is complete -------------------------------------------------------


@pytest.mark.backend_free
def test_every_public_function_has_rows_passing_every_array_argument() -> None:
    missing = set(CAPABILITIES) - {row.function for row in ROWS}
    assert not missing, f"{sorted(missing)}: add rows to tests/_calls.py (ROWS)"
    assert {row.function for row in ROWS} <= set(CAPABILITIES)
    for name, found in CAPABILITIES.items():
        passed = {n for row in ROWS if row.function == name for n in row.names}
        assert passed == set(found.arrays), f"{name}: rows pass {passed}, the table {found.arrays}"
    assert len({row.id for row in ROWS}) == len(ROWS), "two rows share an id"


# --- Positions, references, checks -----------------------------------------------


def _positions(
    shape: Shape, backend: str, *, differentiable: bool = False, each: bool = True
) -> list[Any]:
    """``(row, traced names)`` for each row of ``shape`` on ``backend``.

    Each array argument alone (``each``), then all of them; with
    ``differentiable``, only positions with at least one gradient.
    """
    params = []
    for row in ROWS:
        found = row.capabilities
        if found.shape is not shape or backend not in found.backends:
            continue
        sets = [(name,) for name in row.names] if each or len(row.names) == 1 else []
        if len(row.names) > 1:
            sets.append(row.names)
        for traced in sets:
            if differentiable and not row.differentiable(traced):
                continue
            label = "all" if len(traced) > 1 else traced[0]
            params.append(pytest.param(row, traced, id=f"{row.id}-{label}"))
    return params


def _outputs(result: Any) -> tuple[Any, ...]:
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)


def _is_floating(x: Any) -> bool:
    return bool(np.issubdtype(np.asarray(x).dtype, np.floating))


def _reference_total(row: Row, values: dict[str, np.ndarray]) -> float:
    return float(sum(np.sum(out) for out in _outputs(row.reference(values)) if _is_floating(out)))


def _total(xp: ModuleType, result: Any) -> Array:
    """The sum of the floating outputs: the scalar whose gradient is checked."""
    floating = [out for out in _outputs(result) if xp.isdtype(out.dtype, "real floating")]
    total = xp.sum(floating[0])
    for out in floating[1:]:
        total = total + xp.sum(out)
    return total


def _check_values(xp: ModuleType, row: Row, result: Any, expected: Any) -> None:
    actual, desired = _outputs(result), _outputs(expected)
    assert len(actual) == len(desired)
    namespace = array_api_compat.array_namespace(xp.asarray(0))
    for got, wanted in zip(actual, desired, strict=True):
        want = np.asarray(wanted)
        assert array_api_compat.array_namespace(got) is namespace
        assert tuple(got.shape) == want.shape, (tuple(got.shape), want.shape)
        kind = "real floating" if _is_floating(want) else "integral"
        assert xp.isdtype(got.dtype, kind), got.dtype
        if kind == "real floating":
            assert got.dtype == xp.float64, got.dtype
        np.testing.assert_allclose(to_numpy(got), want, rtol=row.rtol, atol=row.atol)


def _direction(x: np.ndarray) -> np.ndarray:
    """A random direction that leaves zero rows and rows of 1e-200 alone."""
    v = np.random.default_rng(7).standard_normal(x.shape)
    if x.ndim >= 2:
        v[np.max(np.abs(x), axis=-1) < 1e-100] = 0.0
    return v


def _check_gradient(row: Row, values: dict[str, np.ndarray], name: str, grad: Array) -> None:
    """``grad`` (of the sum of the floating outputs) against central differences."""
    grad = to_numpy(grad)
    assert grad.shape == values[name].shape, (name, grad.shape)
    assert np.all(np.isfinite(grad)), (name, grad)
    v = _direction(values[name])
    h = 1e-6 * max(1.0, float(np.max(np.abs(values[name]))))

    def at(step: float) -> float:
        return _reference_total(row, {**values, name: values[name] + step * v})

    expected = (at(h) - at(-h)) / (2 * h)
    np.testing.assert_allclose(np.sum(grad * v), expected, **FD_TOL, err_msg=name)


def _bind(
    xp: ModuleType, row: Row, traced: Sequence[str], values: dict[str, np.ndarray]
) -> tuple[Callable[..., Any], list[Array]]:
    """``row`` as a function of the arguments ``traced`` (the others concrete), and those."""
    constants = {name: asarray(xp, value) for name, value in values.items()}
    invoke = row.caller()

    def call(*arrays: Array) -> Any:
        return invoke({**constants, **dict(zip(traced, arrays, strict=True))})

    return call, [constants[name] for name in traced]


def _batches(
    row: Row, traced: Sequence[str]
) -> tuple[list[np.ndarray], list[dict[str, np.ndarray]]]:
    """Two values of each traced argument stacked on a new axis 0, and each batch's inputs."""
    first, second = row.values(0), row.values(2)
    other = {**first, **{name: second[name] for name in traced}}
    return [np.stack([first[name], second[name]]) for name in traced], [first, other]


def _stacked_reference(row: Row, batches: list[dict[str, np.ndarray]]) -> tuple[np.ndarray, ...]:
    each = [_outputs(row.reference(values)) for values in batches]
    return tuple(np.stack(outs) for outs in zip(*each, strict=True))


def on(backend: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run a test on ``backend`` only: collected in its sessions, with its ``xp`` and device."""

    def mark(test: Callable[..., Any]) -> Callable[..., Any]:
        test = pytest.mark.parametrize(
            "library", [Backend(backend)], indirect=True, ids=[backend]
        )(test)
        return pytest.mark.backends(backend)(test)

    return mark


FIXED, VALUES = Shape.FIXED, Shape.VALUES


# --- JAX -------------------------------------------------------------------------


@on("jax")
@pytest.mark.parametrize(("row", "traced"), _positions(FIXED, "jax"))
def test_jax_jit(xp: ModuleType, row: Row, traced: tuple[str, ...]) -> None:
    # One compiled program per position: the value, value_and_grad (where a
    # gradient exists) and vmap, each traced in it, so the three share one
    # compilation. The arguments not traced are concrete arrays closed over.
    import jax

    values = row.values()
    call, arrays = _bind(xp, row, traced, values)
    stacked, batches = _batches(row, traced)
    argnums = row.differentiable(traced)

    def program(arrays: list[Array], stacked: list[Array]) -> Any:
        gradient = (
            jax.value_and_grad(lambda *a: _total(xp, call(*a)), argnums)(*arrays)
            if argnums
            else None
        )
        return call(*arrays), gradient, jax.vmap(call)(*stacked)

    value, gradient, batched = jax.jit(program)(arrays, [asarray(xp, s) for s in stacked])
    _check_values(xp, row, value, row.reference(values))
    _check_values(xp, row, batched, _stacked_reference(row, batches))
    if gradient is not None:
        total, grads = gradient
        np.testing.assert_allclose(float(total), _reference_total(row, values), rtol=row.rtol)
        for i, grad in zip(argnums, grads, strict=True):
            _check_gradient(row, values, traced[i], grad)


# Without jit, JAX dispatches operation by operation, compiling each kind
# once: slower than one jit, and cosinekit's code runs the same (it sees a
# JAX trace either way), so these run once per row, every argument traced.


@on("jax")
@pytest.mark.parametrize(
    ("row", "traced"), _positions(FIXED, "jax", differentiable=True, each=False)
)
def test_jax_value_and_grad(xp: ModuleType, row: Row, traced: tuple[str, ...]) -> None:
    # jax.grad is value_and_grad with the value dropped (JAX defines it so).
    import jax

    values = row.values()
    call, arrays = _bind(xp, row, traced, values)
    argnums = row.differentiable(traced)
    total, grads = jax.value_and_grad(lambda *a: _total(xp, call(*a)), argnums)(*arrays)
    np.testing.assert_allclose(float(total), _reference_total(row, values), rtol=row.rtol)
    for i, grad in zip(argnums, grads, strict=True):
        _check_gradient(row, values, traced[i], grad)


@on("jax")
@pytest.mark.parametrize(("row", "traced"), _positions(FIXED, "jax", each=False))
def test_jax_vmap(xp: ModuleType, row: Row, traced: tuple[str, ...]) -> None:
    import jax

    stacked, batches = _batches(row, traced)
    call, _ = _bind(xp, row, traced, batches[0])
    result = jax.vmap(call)(*(asarray(xp, s) for s in stacked))
    _check_values(xp, row, result, _stacked_reference(row, batches))


# --- PyTorch ---------------------------------------------------------------------


def _compiled(function: Callable[..., Any], **options: Any) -> Callable[..., Any]:
    """``torch.compile`` of a copy of ``function`` with a code object of its own.

    Dynamo keeps its cache on the code object; closures of one ``def``
    share it, so after a few tests their guards would pile up to the
    recompile limit, past which Dynamo runs the frame uncompiled. A fresh
    code object starts with an empty cache: each compilation is this
    test's own, whatever ran before, with no ``torch._dynamo.reset()``.
    """
    import torch

    assert isinstance(function, FunctionType)
    copy = FunctionType(
        function.__code__.replace(),
        function.__globals__,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    return torch.compile(copy, **options)


def _requiring_grad(arrays: list[Array], argnums: tuple[int, ...]) -> list[Array]:
    return [a.clone().requires_grad_(True) if i in argnums else a for i, a in enumerate(arrays)]


@on("torch")
@pytest.mark.parametrize(("row", "traced"), _positions(FIXED, "torch", each=False))
def test_torch_compile(xp: ModuleType, row: Row, traced: tuple[str, ...]) -> None:
    # No gradient recorded: inference. Every argument traced at once covers
    # each alone, since Dynamo lifts a closed-over tensor into the graph as
    # an input just as it does an argument; which one is traced matters only
    # for the gradients (test_torch_compile_backward, per position).
    values = row.values()
    call, arrays = _bind(xp, row, traced, values)
    compiled = _compiled(call, fullgraph=True, backend="eager", dynamic=False)
    _check_values(xp, row, compiled(*arrays), row.reference(values))


@on("torch")
@pytest.mark.parametrize(("row", "traced"), _positions(FIXED, "torch", differentiable=True))
def test_torch_compile_backward(xp: ModuleType, row: Row, traced: tuple[str, ...]) -> None:
    # One compilation per position gives the value and the gradient. Which
    # arguments require a gradient changes the trace (cosinekit's
    # hand-written backward and what it is asked for), and Dynamo traces
    # that backward with this pattern on either backend; AOTAutograd's joint
    # trace and partition (aot_eager, several times Dynamo's cost) runs once
    # per row, with every argument traced.
    values = row.values()
    call, arrays = _bind(xp, row, traced, values)
    argnums = row.differentiable(traced)
    inputs = _requiring_grad(arrays, argnums)
    backend = "aot_eager" if len(traced) == len(row.names) else "eager"
    compiled = _compiled(call, fullgraph=True, backend=backend, dynamic=False)
    result = compiled(*inputs)
    _check_values(xp, row, result, row.reference(values))
    _total(xp, result).backward()
    for i in argnums:
        _check_gradient(row, values, traced[i], inputs[i].grad)


@on("torch")
@pytest.mark.parametrize(("row", "traced"), _positions(FIXED, "torch", differentiable=True))
def test_torch_func_grad(xp: ModuleType, row: Row, traced: tuple[str, ...]) -> None:
    import torch

    values = row.values()
    call, arrays = _bind(xp, row, traced, values)
    argnums = row.differentiable(traced)
    grads, total = torch.func.grad_and_value(lambda *a: _total(xp, call(*a)), argnums)(*arrays)
    np.testing.assert_allclose(float(total), _reference_total(row, values), rtol=row.rtol)
    for i, grad in zip(argnums, grads, strict=True):
        _check_gradient(row, values, traced[i], grad)


@on("torch")
@pytest.mark.parametrize(("row", "traced"), _positions(FIXED, "torch"))
def test_torch_func_vmap(xp: ModuleType, row: Row, traced: tuple[str, ...]) -> None:
    import torch

    stacked, batches = _batches(row, traced)
    call, _ = _bind(xp, row, traced, batches[0])
    result = torch.func.vmap(call)(*(asarray(xp, s) for s in stacked))
    _check_values(xp, row, result, _stacked_reference(row, batches))


@on("torch")
@pytest.mark.parametrize(("row", "traced"), _positions(FIXED, "torch", differentiable=True))
def test_torch_autograd(xp: ModuleType, row: Row, traced: tuple[str, ...]) -> None:
    values = row.values()
    call, arrays = _bind(xp, row, traced, values)
    argnums = row.differentiable(traced)
    inputs = _requiring_grad(arrays, argnums)
    result = call(*inputs)
    _check_values(xp, row, result, row.reference(values))
    _total(xp, result).backward()
    for i in argnums:
        _check_gradient(row, values, traced[i], inputs[i].grad)


# Inductor folds the NaN flag ``isnan(0 * sqrt(s - low))`` that picks the
# rescaled path to False, so a row whose squares underflow (the 1e-200 row)
# takes the fast path: unit vectors of ~1e-54 in l2_normalize, the pairwise
# functions and the losses built on them (torch 2.13, CPU).
INDUCTOR_RESCALING = pytest.mark.xfail(
    strict=True, reason="inductor drops the rescaled path of unit rows (reported)"
)
INDUCTOR = [
    pytest.param(
        next(r for r in ROWS if r.id == "cosine_similarity-weighted"),
        id="cosine_similarity-weighted",
    ),
    pytest.param(
        next(r for r in ROWS if r.id == "info_nce_loss-labels"),
        id="info_nce_loss-labels",
        marks=INDUCTOR_RESCALING,
    ),
]


@on("torch")
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("row", INDUCTOR)
def test_torch_compile_inductor(xp: ModuleType, row: Row) -> None:
    # Code generation proper (the default backend) for a few rows, every
    # argument traced: forward and backward through generated kernels.
    values = row.values()
    call, arrays = _bind(xp, row, row.names, values)
    argnums = row.differentiable(row.names)
    inputs = _requiring_grad(arrays, argnums)
    result = _compiled(call, fullgraph=True, dynamic=False)(*inputs)
    _check_values(xp, row, result, row.reference(values))
    _total(xp, result).backward()
    for i in argnums:
        _check_gradient(row, values, row.names[i], inputs[i].grad)


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
        outputs = _outputs(result)
        assert all(isinstance(out, da.Array) for out in outputs)
        if kind is not Dask.COMPUTED:
            assert computes[0] == 0, "building the result computed the graph"
            unknown = [np.isnan(out.shape[0]) if out.ndim else False for out in outputs]
            assert all(unknown) if kind is Dask.LAZY_UNKNOWN_LENGTH else not any(unknown)
            before = computes[0]
            outputs = dask.compute(*outputs)
            assert computes[0] == before + 1
    for got, want in zip(outputs, _outputs(row.reference(values)), strict=True):
        np.testing.assert_allclose(to_numpy(got), want, rtol=row.rtol, atol=row.atol)


# --- Value-dependent shapes -------------------------------------------------------


@on("jax")
@pytest.mark.parametrize("transform", ["jit", "grad", "vmap"])
@pytest.mark.parametrize(("row", "traced"), _positions(VALUES, "jax"))
def test_jax_value_dependent_is_a_type_error(
    xp: ModuleType, row: Row, traced: tuple[str, ...], transform: str
) -> None:
    import jax

    values = row.values()
    call, arrays = _bind(xp, row, traced, values)
    if transform == "grad":
        argnums = row.differentiable(traced) or (0,)
        transformed = jax.grad(lambda *a: _total(xp, call(*a)), argnums)
    elif transform == "vmap":
        arrays = [asarray(xp, s) for s in _batches(row, traced)[0]]
        transformed = jax.vmap(call)
    else:
        transformed = jax.jit(call)
    with pytest.raises(TypeError, match=row.function):
        transformed(*arrays)


@on("torch")
@pytest.mark.parametrize("transform", ["grad", "vmap"])
@pytest.mark.parametrize(("row", "traced"), _positions(VALUES, "torch"))
def test_torch_func_value_dependent_is_a_type_error(
    xp: ModuleType, row: Row, traced: tuple[str, ...], transform: str
) -> None:
    import torch

    values = row.values()
    call, arrays = _bind(xp, row, traced, values)
    if transform == "grad":
        argnums = row.differentiable(traced) or (0,)
        transformed = torch.func.grad(lambda *a: _total(xp, call(*a)), argnums)
    else:
        arrays = [asarray(xp, s) for s in _batches(row, traced)[0]]
        transformed = torch.func.vmap(call)
    with pytest.raises(TypeError, match=row.function):
        transformed(*arrays)


@on("torch")
@pytest.mark.parametrize(("row", "traced"), _positions(VALUES, "torch"))
def test_torch_compile_value_dependent_is_a_graph_break(
    xp: ModuleType, row: Row, traced: tuple[str, ...]
) -> None:
    import torch

    values = row.values()
    call, arrays = _bind(xp, row, traced, values)
    eager = call(*arrays)
    # The graph breaks at the call, which runs eagerly: the eager result.
    result = _compiled(call, backend="eager", dynamic=False)(*arrays)
    for got, want in zip(_outputs(result), _outputs(eager), strict=True):
        assert torch.equal(got, want)
    _check_values(xp, row, result, row.reference(values))
    with pytest.raises(Exception, match="disable"):
        _compiled(call, fullgraph=True, backend="eager", dynamic=False)(*arrays)


@on("torch")
@pytest.mark.parametrize(("row", "traced"), _positions(VALUES, "torch", differentiable=True))
def test_torch_autograd_value_dependent(xp: ModuleType, row: Row, traced: tuple[str, ...]) -> None:
    values = row.values()
    call, arrays = _bind(xp, row, traced, values)
    argnums = row.differentiable(traced)
    inputs = _requiring_grad(arrays, argnums)
    result = call(*inputs)
    _check_values(xp, row, result, row.reference(values))
    _total(xp, result).backward()
    for i in argnums:
        _check_gradient(row, values, traced[i], inputs[i].grad)


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
    compiled = _compiled(_per_query, fullgraph=True, backend="eager")
    got = compiled(asarray(xp, q), asarray(xp, k), asarray(xp, labels))
    np.testing.assert_allclose(to_numpy(got), expected, **CONTRASTIVE)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        _per_query(asarray(xp, q), asarray(xp, k), asarray(xp, labels))
