"""``cosinekit.jax.cached_value_and_grad`` equals ``jax.value_and_grad`` (float64).

Without ``rng`` the reference is ``jax.value_and_grad`` of the unsliced
computation; with ``rng`` it is ``jax.value_and_grad`` of the computation
written slice by slice with the documented keys,
``fold_in(fold_in(rng, role), slice)``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import cosinekit as ck

jax = pytest.importorskip("jax", reason="cosinekit.jax needs JAX")
jnp = pytest.importorskip("jax.numpy")
ckj = pytest.importorskip("cosinekit.jax")

TOL = {"rtol": 1e-10, "atol": 1e-12}


@pytest.fixture(autouse=True)
def _float64() -> None:
    jax.config.update("jax_enable_x64", True)


def _params(seed: int, d_in: int = 6, d_out: int = 5) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "w1": jnp.asarray(rng.standard_normal((d_in, 16)) / 2),
        "b1": jnp.asarray(rng.standard_normal(16) / 4),
        "w2": jnp.asarray(rng.standard_normal((16, d_out)) / 4),
    }


def _randn(*shape: int, seed: int) -> Any:
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape))


def _mlp(params: dict[str, Any], x: Any) -> Any:
    return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"]


def _dropout_mlp(params: dict[str, Any], x: Any, key: Any) -> Any:
    hidden = jnp.tanh(x @ params["w1"] + params["b1"])
    keep = jax.random.bernoulli(key, 0.6, hidden.shape)
    return jnp.where(keep, hidden / 0.6, 0.0) @ params["w2"]


def _info_nce(anchors: Any, keys: Any, temperature: float = 0.1) -> Any:
    """InfoNCE written out in jnp: quick to compile (the docs run cosinekit's own)."""
    anchors = anchors / jnp.linalg.norm(anchors, axis=1, keepdims=True)
    keys = keys / jnp.linalg.norm(keys, axis=1, keepdims=True)
    logits = anchors @ keys.T / temperature
    positives = jnp.diagonal(logits[:, : anchors.shape[0]])
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - positives)


def _info_nce_with_negatives(anchors: Any, positives: Any, negatives: Any) -> Any:
    return _info_nce(anchors, jnp.concatenate([positives, negatives]))


def _assert_trees_close(actual: Any, desired: Any) -> None:
    assert jax.tree_util.tree_structure(actual) == jax.tree_util.tree_structure(desired)
    for a, d in zip(
        jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(desired), strict=True
    ):
        assert a.dtype == d.dtype
        np.testing.assert_allclose(np.asarray(a), np.asarray(d), **TOL)


JAX_ONLY = pytest.mark.backends("jax")


@JAX_ONLY
def test_shared_encoder_three_roles_equals_value_and_grad() -> None:
    params = _params(0)
    inputs = [_randn(10, 6, seed=1), _randn(10, 6, seed=2), _randn(7, 6, seed=3)]
    desired = jax.jit(
        jax.value_and_grad(lambda p, b: _info_nce_with_negatives(*(_mlp(p, x) for x in b)))
    )(params, inputs)
    # Slices of 4: 10 = 4 + 4 + 2 and 7 = 4 + 3 (a map over the whole slices, then the rest).
    actual = jax.jit(
        lambda p, b: ckj.cached_value_and_grad(_info_nce_with_negatives, _mlp, p, b, chunk_size=4)
    )(params, inputs)
    _assert_trees_close(actual, desired)


def _sliced_with_keys(
    loss_fn: Callable[..., Any],
    encoders: list[Callable[..., Any]],
    inputs: list[Any],
    chunk_size: int,
    rng: Any,
) -> Callable[[Any], Any]:
    """The documented reference: every slice encoded with fold_in(fold_in(rng, r), s)."""

    def loss(params: Any) -> Any:
        embeddings = []
        for role, (encode, batch) in enumerate(zip(encoders, inputs, strict=True)):
            role_key = jax.random.fold_in(rng, role)
            starts = range(0, batch.shape[0], chunk_size)
            pieces = [
                encode(params, batch[start : start + chunk_size], jax.random.fold_in(role_key, s))
                for s, start in enumerate(starts)
            ]
            embeddings.append(jnp.concatenate(pieces))
        return loss_fn(*embeddings)

    return loss


@JAX_ONLY
@pytest.mark.parametrize("chunk_size", [3, 8])
def test_rng_equals_value_and_grad_with_the_slice_keys(chunk_size: int) -> None:
    # chunk_size 8: one slice per role, the whole batch with fold_in(fold_in(rng, r), 0).
    params = _params(1)
    inputs = [_randn(8, 6, seed=4), _randn(8, 6, seed=5)]
    rng = jax.random.key(42)

    def loss_fn(a: Any, b: Any) -> Any:
        return (_info_nce(a, b, 0.2) + _info_nce(b, a, 0.2)) / 2

    reference = _sliced_with_keys(loss_fn, [_dropout_mlp] * 2, inputs, chunk_size, rng)
    desired = jax.jit(jax.value_and_grad(reference))(params)
    step = jax.jit(
        lambda p, key: ckj.cached_value_and_grad(
            loss_fn, _dropout_mlp, p, inputs, chunk_size=chunk_size, rng=key
        )
    )
    actual = step(params, rng)
    _assert_trees_close(actual, desired)
    # The masks matter: another key gives another loss.
    assert not np.allclose(step(params, jax.random.key(43))[0], actual[0])


@JAX_ONLY
def test_one_encoder_per_role_dict_inputs_under_jit() -> None:
    # Two towers with a shared first layer: each encoder reads its part of one pytree.
    shared, query_head, doc_head = _params(2), _params(3, 5, 4), _params(4, 5, 4)
    params = {"shared": shared, "query": query_head, "document": doc_head}

    def encode_queries(p: Any, batch: dict[str, Any]) -> Any:
        return _mlp(p["query"], _mlp(p["shared"], batch["x"] * batch["mask"][:, None]))

    def encode_documents(p: Any, batch: dict[str, Any]) -> Any:
        return _mlp(p["document"], _mlp(p["shared"], batch["x"])) * batch["scale"][:, None]

    mask = (np.random.default_rng(6).random(9) > 0.3).astype(np.float64)
    inputs = [
        {"x": _randn(9, 6, seed=7), "mask": jnp.asarray(mask)},
        {"x": _randn(12, 6, seed=8), "scale": jnp.abs(_randn(12, seed=9)) + 0.5},
    ]
    encoders = [encode_queries, encode_documents]

    desired = jax.jit(
        jax.value_and_grad(
            lambda p, batches: _info_nce(
                *(encode(p, b) for encode, b in zip(encoders, batches, strict=True))
            )
        )
    )(params, inputs)
    step = jax.jit(
        lambda p, batches: ckj.cached_value_and_grad(_info_nce, encoders, p, batches, chunk_size=4)
    )
    _assert_trees_close(step(params, inputs), desired)


@JAX_ONLY
def test_encoder_activations_are_held_for_one_slice() -> None:
    """XLA's temporary buffers: about one slice's activations, not the batch's."""
    params = {"w1": _randn(6, 512, seed=1) / 4, "w2": _randn(512, 4, seed=2) / 16}

    def encode(p: Any, x: Any) -> Any:
        return jnp.tanh(x @ p["w1"]) @ p["w2"]

    def loss_fn(a: Any, b: Any) -> Any:
        return ck.cosine_distance_loss(a, b, reduction="mean")

    inputs = [_randn(256, 6, seed=3), _randn(256, 6, seed=4)]

    def temporary_bytes(fn: Callable[..., Any]) -> int:
        analysis = jax.jit(fn).lower(params, inputs).compile().memory_analysis()
        return int(analysis.temp_size_in_bytes)

    whole = temporary_bytes(
        jax.value_and_grad(lambda p, batches: loss_fn(*(encode(p, b) for b in batches)))
    )
    cached = temporary_bytes(
        lambda p, batches: ckj.cached_value_and_grad(loss_fn, encode, p, batches, chunk_size=16)
    )
    # Plain: the hidden activations of both roles, 2 x 256 x 512 float64 (2 MiB).
    activations = 2 * 256 * 512 * 8
    assert whole >= activations
    assert cached < whole / 4


def _bad_arguments(x: Any) -> dict[str, tuple[dict[str, Any], type, str]]:
    """id -> (the arguments that differ from a valid call, the error, its message)."""
    return {
        "chunk_size 0": ({"chunk_size": 0}, ValueError, "chunk_size must be positive"),
        "chunk_size float": ({"chunk_size": 1.5}, TypeError, "chunk_size must be an integer"),
        "inputs an array": ({"inputs": x}, TypeError, "inputs must be a list or tuple"),
        "rows disagree": (
            {"inputs": [{"a": x, "b": x[:3]}]},
            ValueError,
            r"share their first dimension, got inputs\[0\]\['a'\]: 4, inputs\[0\]\['b'\]: 3",
        ),
        "0-d": ({"inputs": [x[0, 0]]}, ValueError, "0-d"),
        "a string leaf": ({"inputs": [{"a": x, "b": "text"}]}, TypeError, "must be an array"),
        "three encoders": (
            {"encode": [_mlp] * 3},
            ValueError,
            "encode holds 3 callables but inputs holds 1",
        ),
        "integer params": (
            {"params": {**_params(0), "steps": jnp.arange(3)}},
            TypeError,
            r"params\['steps'\] must be floating",
        ),
        "rng not a key": ({"rng": 3}, TypeError, "rng must be one PRNG key"),
        "rng several keys": (
            {"rng": "split"},
            TypeError,
            "rng must be one PRNG key",
        ),
        "rows lost": ({"encode": lambda p, b: _mlp(p, b)[:-1]}, ValueError, "returned shape"),
        "tuple out": ({"encode": lambda p, b: (_mlp(p, b),)}, TypeError, "must return an array"),
        "vector loss": ({"loss_fn": lambda e: e.sum(axis=1)}, ValueError, "must return a scalar"),
        "loss_fn None": ({"loss_fn": None}, TypeError, "loss_fn must be callable"),
    }


@JAX_ONLY
@pytest.mark.parametrize("case", list(_bad_arguments(np.zeros((4, 6)))))
def test_argument_errors(case: str) -> None:
    x = _randn(4, 6, seed=1)
    changes, error, match = _bad_arguments(x)[case]
    if changes.get("rng") == "split":
        changes["rng"] = jax.random.split(jax.random.key(0), 2)
    arguments: dict[str, Any] = {
        "loss_fn": lambda e: e.sum(),
        "encode": _mlp,
        "params": _params(0),
        "inputs": [x],
        "chunk_size": 2,
        "rng": None,
        **changes,
    }
    if arguments["rng"] is not None:
        encode = arguments["encode"]
        arguments["encode"] = lambda p, b, key: encode(p, b)
    with pytest.raises(error, match=match):
        ckj.cached_value_and_grad(
            arguments["loss_fn"],
            arguments["encode"],
            arguments["params"],
            arguments["inputs"],
            chunk_size=arguments["chunk_size"],
            rng=arguments["rng"],
        )


@pytest.mark.backend_free
def test_importing_cosinekit_does_not_import_jax() -> None:
    code = (
        "import sys, cosinekit; "
        "assert 'jax' not in sys.modules, 'jax was imported'; "
        "assert 'cosinekit.jax' not in sys.modules"
    )
    src = str(Path(ck.__file__).parent.parent)
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": src}, timeout=120)
