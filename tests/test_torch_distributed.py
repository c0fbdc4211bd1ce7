"""``cosinekit.torch.all_gather`` on real gloo process groups of 1, 2 and 3 processes.

The rank-side checks below run in one set of three processes (see
``_distributed.py``), for each world size in turn; each pytest test reports
one check of one world size. Every rank builds the whole global batch from a
shared seed and takes its own rows, so each check compares against a
single-process reference computed on the concatenation: by hand with NumPy
for the gather, and with plain autograd on one process for the losses.

Ranks hold different numbers of rows, and some none.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _distributed import Outcome, Rank, RankChecks, run_rank_checks

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
ckt = pytest.importorskip("cosinekit.torch")

import cosinekit as ck  # noqa: E402

pytestmark = pytest.mark.backends("torch")

WORLDS = (3, 2, 1)
CHECKS = RankChecks()
DTYPES = (torch.float64, torch.float32, torch.float16)


def row_counts(world_size: int) -> list[list[int]]:
    """Rows per rank: equal, uneven, some ranks empty, every rank empty."""
    return [[3] * world_size, [2, 5, 1][:world_size], [0, 4, 0][:world_size], [0] * world_size]


def own_rows(counts: list[int], rank: int) -> slice:
    """Where rank ``rank``'s rows lie in the concatenation."""
    start = sum(counts[:rank])
    return slice(start, start + counts[rank])


def normal(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def close(actual: Any, expected: np.ndarray, dtype: Any = torch.float64) -> None:
    """``actual`` (a tensor of ``dtype``) against a float64 reference."""
    tolerance = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-2}[dtype]
    assert actual.dtype == dtype
    np.testing.assert_allclose(
        actual.detach().double().numpy(), expected, rtol=tolerance, atol=tolerance
    )


@CHECKS.add
def gathers_rows_in_rank_order(me: Rank) -> None:
    for counts in row_counts(me.world_size):
        for trailing in [(), (2, 3)]:
            everyone = normal(sum(counts), sum(counts), *trailing)
            for dtype in DTYPES:
                x = torch.tensor(everyone[own_rows(counts, me.rank)], dtype=dtype)
                gathered = ckt.all_gather(x)
                assert gathered.shape == everyone.shape
                assert torch.equal(gathered, torch.tensor(everyone, dtype=dtype))
                if me.world_size == 1:
                    assert gathered is x
    labels = torch.arange(10 * me.rank, 10 * me.rank + me.rank + 1)
    expected = np.concatenate([np.arange(10 * r, 11 * r + 1) for r in range(me.world_size)])
    np.testing.assert_array_equal(ckt.all_gather(labels).numpy(), expected)


@CHECKS.add
def gradient_sums_every_ranks_use(me: Rank) -> None:
    # Rank s's loss is sum(w_s * G + u_s * G**2 / 2) of the gathered G, so the
    # gradient reaching rank r's rows is the sum over s of (w_s + u_s * G) there.
    for counts in row_counts(me.world_size):
        total, mine = sum(counts), own_rows(counts, me.rank)
        everyone = normal(1, total, 3)
        w, u = normal(2, me.world_size, total, 3), normal(3, me.world_size, total, 3)
        expected = (w + u * everyone).sum(axis=0)[mine]
        for dtype in DTYPES:
            x = torch.tensor(everyone[mine], dtype=dtype, requires_grad=True)
            gathered = ckt.all_gather(x)
            w_mine, u_mine = (torch.tensor(a[me.rank], dtype=dtype) for a in (w, u))
            (w_mine * gathered + u_mine * gathered**2 / 2).sum().backward()
            close(x.grad, expected, dtype)


@CHECKS.add
def differentiates_to_third_order(me: Rank) -> None:
    # Rank s's loss is sum(w_s * G**3) / 3; with S = sum_s w_s, rank r gets
    # g = X**2 S on its rows, then the gradient of sum_s <g_s, v_s> is
    # h = 2 X v S.
    counts = [2, 0, 3][: me.world_size]
    total, mine = sum(counts), own_rows(counts, me.rank)
    everyone = normal(4, total, 3)
    w, v, z = (normal(seed, me.world_size, total, 3) for seed in (5, 6, 7))
    weights = w.sum(axis=0)[mine]
    x = torch.tensor(everyone[mine], requires_grad=True)
    gathered = ckt.all_gather(x)
    loss = (torch.tensor(w[me.rank]) * gathered**3).sum() / 3
    (g,) = torch.autograd.grad(loss, x, create_graph=True)
    close(g, everyone[mine] ** 2 * weights)
    v_mine = torch.tensor(v[me.rank][mine])
    (h,) = torch.autograd.grad((g * v_mine).sum(), x, create_graph=True)
    close(h, 2 * everyone[mine] * v[me.rank][mine] * weights)
    # With V and Z the concatenations of the ranks' v and z: the gradient
    # of sum_s <h_s, z_s> = <2 S G V, Z> is 2 S V Z.
    z_mine = torch.tensor(z[me.rank][mine])
    (third,) = torch.autograd.grad((h * z_mine).sum(), x)
    close(third, 2 * v[me.rank][mine] * z[me.rank][mine] * weights)


@CHECKS.add
def rejects_different_layouts_on_every_rank(me: Rank) -> None:
    with pytest.raises(ValueError, match="at least one dimension"):
        ckt.all_gather(torch.tensor(1.0))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        ckt.all_gather(np.zeros((2, 3)))
    if me.world_size == 1:
        return
    width = 3 if me.rank == 0 else 4
    with pytest.raises(ValueError, match="same trailing shape and dtype"):
        ckt.all_gather(torch.zeros(2, width))
    dtype = torch.float32 if me.rank == 0 else torch.float64
    with pytest.raises(ValueError, match="same trailing shape and dtype"):
        ckt.all_gather(torch.zeros(2, 3, dtype=dtype))
    # Every rank raised at the same point: the group is still in step.
    assert ckt.all_gather(torch.ones(1, 2)).shape == (me.world_size, 2)


@CHECKS.add
def gathers_over_a_subgroup(me: Rank) -> None:
    members = sorted({0, me.world_size - 1})
    group = dist.new_group(members)  # every rank of the world takes part
    x = torch.full((me.rank + 1, 2), float(me.rank), dtype=torch.float64, requires_grad=True)
    if me.rank not in members:
        with pytest.raises(ValueError, match="not a member"):
            ckt.all_gather(x, group=group)
        return
    gathered = ckt.all_gather(x, group=group)
    expected = np.concatenate([np.full((r + 1, 2), float(r)) for r in members])
    close(gathered, expected)
    if len(members) == 1:
        assert gathered is x
    gathered.sum().backward()
    close(x.grad, np.full((me.rank + 1, 2), float(len(members))))


# The contrastive losses on several processes. `share` is what a rank's loss
# returns (its rows' share of the loss of the concatenated batch, scaled so
# that the mean over ranks is that loss); the tests of the modules'
# gather=True compare with it.


def share(queries: Any, keys: Any, temperature: Any, *, symmetric: bool = False) -> Any:
    """Rank r's share: ``W / N`` times the sum of its queries' InfoNCE losses.

    Each rank's keys are its queries' positives, then (optionally) extra
    negatives: the gathered keys interleave them by rank, so a query's
    positive is found by counting the keys of the ranks before it.
    """
    n, rank = queries.shape[0], dist.get_rank() if dist.is_initialized() else 0
    query_counts = ckt.all_gather(torch.tensor([n]))
    key_counts = ckt.all_gather(torch.tensor([keys.shape[0]]))
    labels = int(key_counts[:rank].sum()) + torch.arange(n)
    every_key = ckt.all_gather(keys)
    total = ck.info_nce_loss(
        queries, every_key, temperature=temperature, labels=labels, reduction="sum"
    )
    if symmetric:
        every_query = ckt.all_gather(queries)
        labels = int(query_counts[:rank].sum()) + torch.arange(n)
        backward = ck.info_nce_loss(
            keys, every_query, temperature=temperature, labels=labels, reduction="sum"
        )
        total = (total + backward) / 2
    # An empty global batch has loss 0 (the mean of no queries), not 0 / 0.
    return total * len(query_counts) / query_counts.sum().clamp(min=1)


class TwoTowers(torch.nn.Module):
    """A shared encoder and a learned temperature, the same on every rank."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = torch.nn.Linear(5, 4, dtype=torch.float64)
        self.log_inverse_temperature = torch.nn.Parameter(torch.tensor(2.0, dtype=torch.float64))

    def forward(self, queries: Any, keys: Any) -> tuple[Any, Any, Any]:
        temperature = torch.exp(-self.log_inverse_temperature)
        return self.encoder(queries), self.encoder(keys), temperature


def check_share_on_ranks(
    me: Rank,
    counts: list[int],
    negatives: list[int],
    rank_loss: Callable[..., Any] = share,
    **options: Any,
) -> None:
    """The loss's mean over ranks and the ranks' mean gradient equal one process's.

    ``rank_loss(queries, keys, temperature, **options)`` is what a rank
    returns (`share`, or a loss module with ``gather=True``); one process
    computes ``info_nce_loss`` of the whole batch with ``options``. Rank
    ``r`` holds ``counts[r]`` queries and their positives, then
    ``negatives[r]`` extra keys. The gradients are averaged with an
    all-reduce, as ``DistributedDataParallel`` does (whose first use imports
    ``torch._dynamo``, seconds per process; the docs' example uses it).
    """
    queries, positives = normal(8, sum(counts), 5), normal(9, sum(counts), 5)
    extra = normal(10, sum(negatives), 5)
    mine = own_rows(counts, me.rank)
    my_keys = np.concatenate([positives[mine], extra[own_rows(negatives, me.rank)]])

    single = TwoTowers()
    q, k, t = single(torch.tensor(queries), torch.tensor(np.concatenate([positives, extra])))
    expected = ck.info_nce_loss(q, k, temperature=t, **options)
    expected.backward()

    model = TwoTowers()
    q, k, t = model(torch.tensor(queries[mine]), torch.tensor(my_keys))
    loss = rank_loss(q, k, t, **options)
    loss.backward()
    mean = loss.detach().clone()
    dist.all_reduce(mean)
    # NumPy's comparison: torch.testing's imports torch.distributed.tensor
    # (sympy) once a process group exists, seconds per process.
    np.testing.assert_allclose(float(mean) / me.world_size, float(expected.detach()), rtol=1e-10)
    reference = dict(single.named_parameters())
    for name, parameter in model.named_parameters():
        dist.all_reduce(parameter.grad)
        np.testing.assert_allclose(
            (parameter.grad / me.world_size).numpy(),
            reference[name].grad.numpy(),
            rtol=1e-10,
            atol=1e-14,
            err_msg=name,
        )


@CHECKS.add
def info_nce_share_gives_the_single_process_loss_and_gradient(me: Rank) -> None:
    for counts in row_counts(me.world_size):
        if sum(counts):  # one process's loss of no queries is a constant
            check_share_on_ranks(me, counts, [0] * me.world_size)


@CHECKS.add
def info_nce_share_with_hard_negatives_on_each_rank(me: Rank) -> None:
    # Each rank's keys are [positives, negatives]: gathered they interleave
    # (sentence-transformers#3453), and the positives must still be found.
    check_share_on_ranks(me, [2, 5, 1][: me.world_size], [1, 2, 3][: me.world_size])


@CHECKS.add
def symmetric_info_nce_share(me: Rank) -> None:
    check_share_on_ranks(me, [2, 3, 0][: me.world_size], [0] * me.world_size, symmetric=True)


# The modules with gather=True, against the functions on one process. Each
# rank's model is a shared encoder and the loss module (with a learned
# temperature, its parameter); the reference encodes the concatenated batch
# with a copy and calls the function.


class Encoded(torch.nn.Module):
    """A shared encoder, then the loss module on the encoded rows."""

    def __init__(self, loss: Any) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = torch.nn.Linear(5, 4)
        self.loss = loss
        self.double()  # a learned temperature too

    def forward(self, *inputs: Any) -> Any:
        encoded = [self.encoder(x) if x.is_floating_point() else x for x in inputs]
        return self.loss(*encoded)


def check_module_on_ranks(
    me: Rank, module: Any, rank_inputs: tuple[Any, ...], reference: Callable[..., Any]
) -> None:
    """Mean loss and mean gradient over ranks equal ``reference``'s on one process.

    ``reference(encoder, log_inverse_temperature)`` is the loss of the whole
    batch, from a copy of the encoder (and of the learned parameter).
    """
    model = Encoded(module)
    single = Encoded(None)
    parameters = dict(model.named_parameters())
    learned = parameters.get("loss.log_inverse_temperature")
    log_scale = None if learned is None else torch.nn.Parameter(learned.detach().clone())
    expected = reference(single.encoder, log_scale)
    if expected.requires_grad:  # else a constant, of gradient 0
        expected.backward()
    reference_grads = {f"encoder.{n}": p.grad for n, p in single.encoder.named_parameters()}
    if log_scale is not None:
        reference_grads["loss.log_inverse_temperature"] = log_scale.grad

    loss = model(*(torch.tensor(x) for x in rank_inputs))
    loss.backward()
    mean = loss.detach().clone()
    dist.all_reduce(mean)
    np.testing.assert_allclose(
        float(mean) / me.world_size, float(expected.detach()), rtol=1e-10, atol=1e-15
    )
    for name, parameter in parameters.items():
        grad = parameter.grad.clone()
        dist.all_reduce(grad)
        wanted = reference_grads[name]
        np.testing.assert_allclose(
            (grad / me.world_size).numpy(),
            np.zeros(grad.shape) if wanted is None else wanted.numpy(),
            rtol=1e-10,
            atol=1e-14,
            err_msg=name,
        )


def info_nce_module_case(
    me: Rank, counts: list[int], negatives: list[int], **options: Any
) -> None:
    """``InfoNCELoss(gather=True, **options)``; rank r's keys are its positives, then negatives."""
    queries, positives = normal(8, sum(counts), 5), normal(9, sum(counts), 5)
    extra = normal(10, sum(negatives), 5)
    mine = own_rows(counts, me.rank)
    my_keys = np.concatenate([positives[mine], extra[own_rows(negatives, me.rank)]])
    learned = options.get("learn_temperature", False)
    temperature = options.get("temperature", 0.05)
    function_options = {
        k: v for k, v in options.items() if k not in ("learn_temperature", "temperature")
    }

    def reference(encoder: Any, log_scale: Any) -> Any:
        keys = torch.tensor(np.concatenate([positives, extra]))
        t = torch.exp(-log_scale) if learned else temperature
        return ck.info_nce_loss(
            encoder(torch.tensor(queries)), encoder(keys), temperature=t, **function_options
        )

    module = ckt.InfoNCELoss(gather=True, **options)
    check_module_on_ranks(me, module, (queries[mine], my_keys), reference)


@CHECKS.add
def info_nce_module_gives_the_single_process_loss_and_gradient(me: Rank) -> None:
    for counts in row_counts(me.world_size):
        # An empty global batch included; on one process that is the plain
        # function's empty batch (the contrastive tests).
        if sum(counts) or me.world_size > 1:
            info_nce_module_case(me, counts, [0] * me.world_size)
    counts = [2, 5, 1][: me.world_size]
    info_nce_module_case(me, counts, [0] * me.world_size, reduction="sum", temperature=0.2)


@CHECKS.add
def info_nce_module_with_hard_negatives_and_a_learned_temperature(me: Rank) -> None:
    negatives = [1, 2, 3][: me.world_size]
    info_nce_module_case(me, [2, 5, 1][: me.world_size], negatives)
    info_nce_module_case(me, [3, 0, 2][: me.world_size], negatives, learn_temperature=True)


@CHECKS.add
def symmetric_info_nce_module(me: Rank) -> None:
    info_nce_module_case(me, [2, 3, 0][: me.world_size], [0] * me.world_size, symmetric=True)
    info_nce_module_case(
        me, [1, 0, 4][: me.world_size], [0] * me.world_size, symmetric=True, learn_temperature=True
    )


@CHECKS.add
def info_nce_module_with_labels_among_the_gathered_keys(me: Rank) -> None:
    # Labels are positions among the gathered keys (rank order); here each
    # query's positive lies on the next rank, and "none" gives this rank's
    # rows of the single-process per-query losses.
    counts = [3, 1, 2][: me.world_size]
    total, mine = sum(counts), own_rows(counts, me.rank)
    queries, keys = normal(11, total, 5), normal(12, total, 5)
    labels = (np.arange(total) + counts[0]) % total
    encoder = Encoded(None).encoder
    module = ckt.InfoNCELoss(0.1, gather=True, reduction="none")
    rank_losses = module(
        encoder(torch.tensor(queries[mine])),
        encoder(torch.tensor(keys[mine])),
        torch.tensor(labels[mine]),
    )
    expected = ck.info_nce_loss(
        encoder(torch.tensor(queries)),
        encoder(torch.tensor(keys)),
        temperature=0.1,
        labels=torch.tensor(labels),
        reduction="none",
    )
    np.testing.assert_allclose(
        rank_losses.detach().numpy(), expected[mine].detach().numpy(), rtol=1e-12
    )
    rank_losses.sum().backward()  # every rank takes part in the backward's gathers
    module = ckt.InfoNCELoss(0.1, gather=True)

    def reference(encoder: Any, _: Any) -> Any:
        return ck.info_nce_loss(
            encoder(torch.tensor(queries)),
            encoder(torch.tensor(keys)),
            temperature=0.1,
            labels=torch.tensor(labels),
        )

    check_module_on_ranks(me, module, (queries[mine], keys[mine], labels[mine]), reference)


def simclr_case(me: Rank, items: list[int]) -> None:
    """Rank r holds two views of its ``items[r]`` items, labelled with their global ids.

    The reference is SimCLR's layout on one process: ``concat(z1, z2)`` of
    every item, labels ``concat(arange(N), arange(N))``.
    """
    total, mine = sum(items), own_rows(items, me.rank)
    first, second = normal(13, total, 5), normal(14, total, 5)
    ids = np.arange(total)

    def reference(encoder: Any, _: Any) -> Any:
        views = torch.tensor(np.concatenate([first, second]))
        labels = torch.tensor(np.concatenate([ids, ids]))
        return ck.ntxent_loss(encoder(views), labels, temperature=0.2)

    rank_views = np.concatenate([first[mine], second[mine]])
    rank_labels = np.concatenate([ids[mine], ids[mine]])
    module = ckt.NTXentLoss(0.2, gather=True)
    check_module_on_ranks(me, module, (rank_views, rank_labels), reference)


@CHECKS.add
def ntxent_module_simclr_with_global_ids(me: Rank) -> None:
    simclr_case(me, [2, 0, 3][: me.world_size])
    simclr_case(me, [1, 3, 0][: me.world_size])


@CHECKS.add
def ntxent_module_with_labels_shared_across_ranks(me: Rank) -> None:
    counts = [3, 4, 0][: me.world_size]
    total, mine = sum(counts), own_rows(counts, me.rank)
    embeddings = normal(15, total, 5)
    # Labels from a few classes (positives on other ranks, some rows without
    # any), then all different: no positive pair, a loss of 0.
    for labels in (np.random.default_rng(16).integers(0, 4, total), np.arange(total)):

        def reference(encoder: Any, _: Any, labels: Any = labels) -> Any:
            return ck.ntxent_loss(encoder(torch.tensor(embeddings)), torch.tensor(labels))

        module = ckt.NTXentLoss(gather=True)
        check_module_on_ranks(me, module, (embeddings[mine], labels[mine]), reference)


@CHECKS.add
def refuses_devices_the_group_cannot_gather_before_any_collective(me: Rank) -> None:
    on_cpu, on_meta = torch.zeros(2, 3), torch.zeros(2, 3, device="meta")
    if me.world_size > 1:
        with pytest.raises(ValueError, match=r"x is on device meta.*gloo.*cpu"):
            ckt.all_gather(on_meta)
    with pytest.raises(ValueError, match="queries on cpu, keys on meta"):
        ckt.InfoNCELoss(gather=True)(on_cpu, on_meta)
    with pytest.raises(ValueError, match="embeddings on cpu, labels on meta"):
        ckt.NTXentLoss(gather=True)(on_cpu, torch.zeros(2, device="meta"))
    # Every rank raised before any collective: the group is still in step.
    assert ckt.all_gather(torch.ones(1, 2)).shape == (me.world_size, 2)


@pytest.fixture(scope="module")
def outcome() -> Outcome:
    return run_rank_checks(Path(__file__).stem, WORLDS)


@pytest.mark.parametrize("world_size", WORLDS)
@pytest.mark.parametrize("check", CHECKS.names)
def test_on_processes(outcome: Outcome, world_size: int, check: str) -> None:
    outcome.check(world_size, check)


def test_without_a_process_group_returns_the_input() -> None:
    assert not dist.is_initialized()
    x = torch.randn(4, 3, requires_grad=True)
    assert ckt.all_gather(x) is x
    empty = torch.zeros(0, 2, 2, dtype=torch.float16)
    assert ckt.all_gather(empty) is empty
    with pytest.raises(ValueError, match="at least one dimension"):
        ckt.all_gather(torch.tensor(1.0))
