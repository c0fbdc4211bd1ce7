"""``cosinekit.torch.cached_backward``: the plain backward's gradients, one slice at a time.

The reference is plain torch autograd: the embeddings computed with a graph
(for the whole batch, or slice by slice from the same seed where dropout
draws per slice), the loss, ``.backward()``. Float64, to 1e-10.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="cosinekit.torch needs torch")
ckt = pytest.importorskip("cosinekit.torch")

pytestmark = pytest.mark.backends("torch")

TOL = {"rtol": 1e-10, "atol": 1e-12}
nn = torch.nn


def _mlp(seed: int, dropout: float = 0.0, d_in: int = 6, d_out: int = 5) -> Any:
    torch.manual_seed(seed)
    layers = [nn.Linear(d_in, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, d_out)]
    return nn.Sequential(*layers).double()


def _randn(*shape: int, seed: int) -> Any:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


def _grads(*modules: Any) -> list[Any]:
    return [None if p.grad is None else p.grad.clone() for m in modules for p in m.parameters()]


def _zero(*modules: Any) -> None:
    for module in modules:
        module.zero_grad(set_to_none=True)


def _assert_grads_equal(actual: list[Any], desired: list[Any]) -> None:
    assert len(actual) == len(desired)
    for a, d in zip(actual, desired, strict=True):
        assert (a is None) == (d is None)
        if a is not None:
            torch.testing.assert_close(a, d, **TOL)


def _take(batch: Any, start: int, stop: int) -> Any:
    if isinstance(batch, dict):
        return {key: value[start:stop] for key, value in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(value[start:stop] for value in batch)
    return batch[start:stop]


def _sliced_plain(
    loss_fn: Callable[..., Any],
    encoders: Sequence[Callable[[Any], Any]],
    inputs: Sequence[Any],
    chunk_size: int,
) -> Any:
    """The plain backward of the loss on embeddings computed slice by slice, with graphs."""
    embeddings = []
    for encoder, batch in zip(encoders, inputs, strict=True):
        rows = len(next(iter(batch.values())) if isinstance(batch, dict) else batch[0])
        rows = len(batch) if isinstance(batch, torch.Tensor) else rows
        pieces = [encoder(_take(batch, s, s + chunk_size)) for s in range(0, rows, chunk_size)]
        embeddings.append(torch.cat(pieces))
    loss = loss_fn(*embeddings)
    loss.backward()
    return loss.detach()


def _info_nce_with_negatives(anchors: Any, positives: Any, negatives: Any) -> Any:
    return ckt.InfoNCELoss(temperature=0.1)(anchors, torch.cat([positives, negatives]))


def test_shared_encoder_three_roles_equals_whole_batch_backward() -> None:
    encoder = _mlp(0)
    inputs = [_randn(10, 6, seed=1), _randn(10, 6, seed=2), _randn(7, 6, seed=3)]
    # The plain computation: each role embedded at once.
    plain = _info_nce_with_negatives(*(encoder(b) for b in inputs))
    plain.backward()
    desired = _grads(encoder)
    _zero(encoder)
    # Slices of 4: the last of each role is ragged (10 = 4 + 4 + 2, 7 = 4 + 3).
    loss = ckt.cached_backward(_info_nce_with_negatives, encoder, inputs, chunk_size=4)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, plain.detach(), **TOL)
    _assert_grads_equal(_grads(encoder), desired)


def test_dropout_replays_each_slice_and_leaves_the_plain_random_state() -> None:
    encoder = _mlp(0, dropout=0.5)
    inputs = [_randn(11, 6, seed=1), _randn(11, 6, seed=2)]
    info_nce = ckt.InfoNCELoss(temperature=0.2, symmetric=True)

    def loss_fn(anchors: Any, positives: Any) -> Any:
        # A loss that draws random numbers too: the state after the call is
        # the one after it, as in the plain computation.
        return info_nce(anchors + 0.01 * torch.randn_like(anchors), positives)

    torch.manual_seed(123)
    desired_loss = _sliced_plain(loss_fn, [encoder] * 2, inputs, chunk_size=3)
    desired, state_after = _grads(encoder), torch.get_rng_state()
    _zero(encoder)
    torch.manual_seed(123)
    loss = ckt.cached_backward(loss_fn, encoder, inputs, chunk_size=3)
    torch.testing.assert_close(loss, desired_loss, **TOL)
    _assert_grads_equal(_grads(encoder), desired)
    assert torch.equal(torch.get_rng_state(), state_after)
    # The masks matter: another seed gives other gradients.
    _zero(encoder)
    torch.manual_seed(124)
    ckt.cached_backward(loss_fn, encoder, inputs, chunk_size=3)
    assert not torch.allclose(_grads(encoder)[0], desired[0])


def test_chunk_size_at_least_the_batch_equals_the_plain_step_with_dropout() -> None:
    encoder = _mlp(0, dropout=0.3)
    inputs = [_randn(9, 6, seed=1), _randn(9, 6, seed=2)]
    loss_fn = ckt.InfoNCELoss(temperature=0.1)
    torch.manual_seed(7)
    plain = loss_fn(encoder(inputs[0]), encoder(inputs[1]))
    plain.backward()
    desired, state_after = _grads(encoder), torch.get_rng_state()
    _zero(encoder)
    torch.manual_seed(7)
    loss = ckt.cached_backward(loss_fn, encoder, inputs, chunk_size=64)
    torch.testing.assert_close(loss, plain.detach(), **TOL)
    _assert_grads_equal(_grads(encoder), desired)
    assert torch.equal(torch.get_rng_state(), state_after)


class _DictTower(nn.Module):
    """A query tower fed a tokenizer-like dict: features and a 0/1 mask."""

    def __init__(self) -> None:
        super().__init__()
        self.body = _mlp(10, dropout=0.25)

    def forward(self, batch: dict[str, Any]) -> Any:
        return self.body(batch["x"] * batch["mask"])


class _TupleTower(nn.Module):
    """A document tower fed a tuple: features and a per-row scale."""

    def __init__(self) -> None:
        super().__init__()
        self.body = _mlp(20, dropout=0.25)

    def forward(self, batch: tuple[Any, Any]) -> Any:
        x, scale = batch
        return self.body(x) * scale[:, None]


def test_one_encoder_per_role_with_dict_and_tuple_inputs_and_a_learned_temperature() -> None:
    queries, documents = _DictTower(), _TupleTower()
    loss_fn = ckt.InfoNCELoss(temperature=0.1, learn_temperature=True).double()
    mask = (_randn(10, 6, seed=3) > -0.5).double()
    inputs = [
        {"x": _randn(10, 6, seed=1), "mask": mask},
        (_randn(10, 6, seed=2), _randn(10, seed=4).abs() + 0.5),
    ]
    torch.manual_seed(5)
    desired_loss = _sliced_plain(loss_fn, [queries, documents], inputs, chunk_size=4)
    desired = _grads(queries, documents, loss_fn)
    _zero(queries, documents, loss_fn)
    torch.manual_seed(5)
    loss = ckt.cached_backward(loss_fn, [queries, documents], inputs, chunk_size=4)
    torch.testing.assert_close(loss, desired_loss, **TOL)
    _assert_grads_equal(_grads(queries, documents, loss_fn), desired)
    assert loss_fn.log_inverse_temperature.grad is not None
    # A ModuleList of towers is one encoder per role too.
    _zero(queries, documents, loss_fn)
    torch.manual_seed(5)
    ckt.cached_backward(loss_fn, nn.ModuleList([queries, documents]), inputs, chunk_size=4)
    _assert_grads_equal(_grads(queries, documents, loss_fn), desired)


def test_gradients_accumulate_and_an_unused_role_gets_none() -> None:
    used, unused = _mlp(0), _mlp(1)
    inputs = [_randn(6, 6, seed=1), _randn(6, 6, seed=2)]

    def loss_fn(a: Any, b: Any) -> Any:
        return (a**2).sum()

    loss_fn(used(inputs[0]), unused(inputs[1])).backward()
    once = _grads(used)
    ckt.cached_backward(loss_fn, [used, unused], inputs, chunk_size=4)
    _assert_grads_equal(_grads(used), [2 * g for g in once])
    assert all(p.grad is None for p in unused.parameters())


def test_batchnorm_running_statistics_are_updated_in_both_passes() -> None:
    # Documented: a layer that mixes rows sees slices, once in each pass.
    encoder = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4)).double()
    inputs = [_randn(8, 6, seed=1), _randn(8, 6, seed=2)]
    ckt.cached_backward(ckt.InfoNCELoss(), encoder, inputs, chunk_size=4)
    # 2 roles x 2 slices, twice.
    assert int(encoder[1].num_batches_tracked) == 8


def test_encoder_activations_are_held_for_one_slice() -> None:
    """Bytes saved for backward alive at once: one slice's, not the batch's."""
    encoder = nn.Sequential(nn.Linear(6, 256), nn.Tanh(), nn.Linear(256, 4)).double()
    params = {p.untyped_storage().data_ptr() for p in encoder.parameters()}
    live = {"now": 0, "peak": 0}

    def pack(tensor: Any) -> Any:
        holder = _Saved(tensor)
        if tensor.untyped_storage().data_ptr() not in params:
            size = tensor.numel() * tensor.element_size()
            live["now"] += size
            live["peak"] = max(live["peak"], live["now"])
            weakref.finalize(holder, lambda: live.__setitem__("now", live["now"] - size))
        return holder

    def peak(run: Callable[[], Any]) -> int:
        live.update(now=0, peak=0)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda holder: holder.tensor):
            run()
        return live["peak"]

    inputs = [_randn(64, 6, seed=1), _randn(64, 6, seed=2)]
    loss_fn = ckt.InfoNCELoss()
    whole = peak(lambda: loss_fn(*(encoder(b) for b in inputs)).backward())
    cached = peak(lambda: ckt.cached_backward(loss_fn, encoder, inputs, chunk_size=8))
    # The two things cached_backward holds, never at once: the loss's graph
    # on the whole batch's embeddings (pass 1), and the encoder's graph of
    # one slice (pass 2).
    one_slice = peak(lambda: encoder(inputs[0][:8]).sum().backward())
    with torch.no_grad():
        embeddings = [encoder(b).requires_grad_() for b in inputs]
    loss_graph = peak(lambda: loss_fn(*embeddings).backward())
    assert cached <= max(one_slice, loss_graph)
    assert cached * 8 < whole


class _Saved:
    def __init__(self, tensor: Any) -> None:
        self.tensor = tensor


def _bad_arguments(encoder: Any, x: Any) -> dict[str, tuple[dict[str, Any], type, str]]:
    """id -> (the arguments that differ from a valid call, the error, its message)."""
    return {
        "chunk_size 0": ({"chunk_size": 0}, ValueError, "chunk_size must be positive"),
        "chunk_size float": ({"chunk_size": 2.0}, TypeError, "chunk_size must be an integer"),
        "chunk_size bool": ({"chunk_size": True}, TypeError, "chunk_size must be an integer"),
        "inputs a tensor": ({"inputs": x}, TypeError, "inputs must be a list or tuple"),
        "inputs empty": ({"inputs": []}, ValueError, "at least one batch"),
        "a list of floats": (
            {"inputs": [[1.0, 2.0]]},
            TypeError,
            r"inputs\[0\]\[0\] must be a torch.Tensor",
        ),
        "rows disagree": (
            {"inputs": [{"x": x, "mask": x[:3]}]},
            ValueError,
            r"first dimension, got inputs\[0\]\['x'\]: 4, inputs\[0\]\['mask'\]: 3",
        ),
        "not a batch": ({"inputs": [object()]}, TypeError, r"inputs\[0\] must be a tensor or"),
        "0-d": ({"inputs": [x[0, 0]]}, ValueError, "0-d"),
        "two encoders": (
            {"encoders": [encoder, encoder]},
            ValueError,
            "encoders holds 2 callables but inputs holds 1",
        ),
        "encoders not callable": ({"encoders": 3}, TypeError, "encoders must be a callable"),
        "encoder not callable": ({"encoders": [3]}, TypeError, r"encoders\[0\] must be callable"),
        "rows lost": ({"encoders": lambda b: encoder(b)[:-1]}, ValueError, "returned shape"),
        "numpy out": (
            {"encoders": lambda b: encoder(b).detach().numpy()},
            TypeError,
            "must return a tensor",
        ),
        "loss_fn None": ({"loss_fn": None}, TypeError, "loss_fn must be callable"),
        "vector loss": ({"loss_fn": lambda e: e.sum(dim=1)}, ValueError, "must return a scalar"),
        "constant loss": (
            {"loss_fn": lambda e: torch.tensor(1.0)},
            ValueError,
            "does not depend on the embeddings",
        ),
        "float loss": ({"loss_fn": lambda e: 1.0}, TypeError, "must return a tensor"),
    }


_BAD = list(_bad_arguments(None, torch.zeros(4, 6)))


@pytest.mark.parametrize("case", _BAD)
def test_argument_errors(case: str) -> None:
    encoder = _mlp(0)
    x = _randn(4, 6, seed=1)
    changes, error, match = _bad_arguments(encoder, x)[case]
    arguments: dict[str, Any] = {
        "loss_fn": lambda e: e.sum(),
        "encoders": encoder,
        "inputs": [x],
        "chunk_size": 2,
        **changes,
    }
    with pytest.raises(error, match=match):
        ckt.cached_backward(
            arguments["loss_fn"],
            arguments["encoders"],
            arguments["inputs"],
            chunk_size=arguments["chunk_size"],
        )
