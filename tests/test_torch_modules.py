"""``cosinekit.torch``: the loss modules equal the functions, the learned temperature.

The learned temperature is checked against CLIP's formulation written here
in plain torch (``logit_scale.exp() * img @ txt.T``, with the parameter
clamped to ``log(100)``), values and gradients.
"""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import cosinekit as ck

torch = pytest.importorskip("torch", reason="cosinekit.torch needs torch")
ckt = pytest.importorskip("cosinekit.torch")

DYNAMO_LRU_CACHE = pytest.mark.filterwarnings(
    "ignore:Dynamo detected a call to a `functools.lru_cache`-wrapped function:UserWarning"
)


def _randn(*shape: int, seed: int = 0) -> Any:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape))


def _modules_and_calls() -> dict[str, tuple[Any, Any, tuple[Any, ...]]]:
    """name -> (module, the function with the same keywords, forward's arguments)."""
    a, b, c = _randn(6, 5, seed=1), _randn(6, 5, seed=2), _randn(6, 5, seed=3)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    target = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    scores = torch.tensor([0.1, 0.4, 0.4, 0.9, 0.2, 0.0], dtype=torch.float64)
    return {
        "CosineDistanceLoss": (
            ckt.CosineDistanceLoss(reduction="mean"),
            lambda x, y: ck.cosine_distance_loss(x, y, reduction="mean"),
            (a, b),
        ),
        "CosineEmbeddingLoss": (
            ckt.CosineEmbeddingLoss(margin=0.2, reduction="sum"),
            lambda x, y, t: ck.cosine_embedding_loss(x, y, t, margin=0.2, reduction="sum"),
            (a, b, target),
        ),
        "InfoNCELoss": (
            ckt.InfoNCELoss(temperature=0.1, symmetric=True),
            lambda x, y: ck.info_nce_loss(x, y, temperature=0.1, symmetric=True),
            (a, b),
        ),
        "NTXentLoss": (
            ckt.NTXentLoss(temperature=0.2),
            lambda x, lab: ck.ntxent_loss(x, lab, temperature=0.2),
            (a, labels),
        ),
        "CoSENTLoss": (
            ckt.CoSENTLoss(scale=10.0),
            lambda x, y, s: ck.cosent_loss(x, y, s, scale=10.0),
            (a, b, scores),
        ),
        "CosineTripletLoss": (
            ckt.CosineTripletLoss(margin=0.5, swap=True, reduction="none"),
            lambda x, y, z: ck.cosine_triplet_loss(
                x, y, z, margin=0.5, swap=True, reduction="none"
            ),
            (a, b, c),
        ),
    }


MODULES = list(_modules_and_calls())


@pytest.mark.parametrize("name", MODULES)
def test_forward_equals_the_function(name: str) -> None:
    module, function, args = _modules_and_calls()[name]
    assert isinstance(module, torch.nn.Module)
    torch.testing.assert_close(module(*args), function(*args), rtol=0, atol=0)


@DYNAMO_LRU_CACHE
@pytest.mark.parametrize("name", MODULES)
def test_module_under_torch_compile(name: str) -> None:
    module, function, args = _modules_and_calls()[name]
    args = tuple(x.clone().requires_grad_(x.is_floating_point()) for x in args)
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    result = compiled(*args)
    torch.testing.assert_close(result, function(*args), rtol=1e-12, atol=1e-12)
    result.sum().backward()
    assert torch.all(torch.isfinite(args[0].grad))


def _clip_reference(q: Any, k: Any, logit_scale: Any) -> Any:
    """CLIP's symmetric loss: logit_scale.exp() times the cosine logits, both directions."""
    q, k = torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(k, dim=-1)
    logits = logit_scale.exp() * q @ k.T
    target = torch.arange(q.shape[0])
    functional = torch.nn.functional
    return (
        functional.cross_entropy(logits, target) + functional.cross_entropy(logits.T, target)
    ) / 2


def test_learned_temperature_matches_clip_values_and_gradients() -> None:
    q, k = _randn(8, 4, seed=4).float(), _randn(8, 4, seed=5).float()
    module = ckt.InfoNCELoss(temperature=0.07, learn_temperature=True, symmetric=True)
    [(name, parameter)] = list(module.named_parameters())
    assert name == "log_inverse_temperature"
    torch.testing.assert_close(parameter.detach(), torch.tensor(math.log(1 / 0.07)))
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    expected = _clip_reference(q, k, logit_scale)
    loss = module(q, k)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    loss.backward()
    expected.backward()
    torch.testing.assert_close(parameter.grad, logit_scale.grad, rtol=1e-4, atol=1e-6)


LOG_CAP = math.log(100.0)


def _aligned(seed: int) -> tuple[Any, Any]:
    """A tight cluster of queries, each key near its query: even at ``1 / t = 100``
    a larger inverse temperature lowers the loss (and `_far` keys raise it)."""
    center = _randn(1, 4, seed=seed).float()
    q = center + 0.1 * _randn(8, 4, seed=seed + 1).float()
    return q, q + 0.02 * _randn(8, 4, seed=seed + 2).float()


def _far(keys: Any) -> Any:
    """Each query's positive moved to another query's key: a smaller 1 / t is better."""
    return keys.roll(1, 0)


def _learned(log_inverse_temperature: float) -> Any:
    module = ckt.InfoNCELoss(temperature=0.05, learn_temperature=True, symmetric=True)
    with torch.no_grad():  # the module's own parameter, as an optimizer writes it
        module.log_inverse_temperature.fill_(log_inverse_temperature)
    return module


def test_learned_temperature_past_the_bound_is_clamped_in_the_forward_only() -> None:
    q, k = _aligned(6)
    module = _learned(10.0)  # 1/t = 22026, as a large optimizer step might leave it
    parameter = module.log_inverse_temperature
    version = parameter._version
    loss = module(q, k)
    torch.testing.assert_close(loss, ck.info_nce_loss(q, k, temperature=0.01, symmetric=True))
    # Read, never written: the parameter keeps the optimizer's value.
    assert parameter._version == version
    assert parameter.item() == 10.0
    # What is reported and saved is what the forward used.
    torch.testing.assert_close(module.temperature, 0.01)
    saved = module.state_dict()["log_inverse_temperature"]
    torch.testing.assert_close(saved, torch.tensor(LOG_CAP))
    assert parameter.item() == 10.0
    assert module.state_dict(keep_vars=True)["log_inverse_temperature"] is parameter


def test_learned_temperature_gradient_at_the_bound_only_points_back() -> None:
    # Past the bound the gradient is CLIP's at the bound where it would
    # lower the parameter, and 0 where it would raise it further.
    q, near = _aligned(8)
    for keys, passes in [(_far(near), True), (near, False)]:
        module = _learned(10.0)
        module(q, keys).backward()
        logit_scale = torch.nn.Parameter(torch.tensor(LOG_CAP))
        _clip_reference(q, keys, logit_scale).backward()
        assert (logit_scale.grad > 0) == passes  # the case is what it claims
        expected = logit_scale.grad if passes else torch.zeros(())
        torch.testing.assert_close(module.log_inverse_temperature.grad, expected)


def test_learned_temperature_after_an_optimizer_step() -> None:
    q, k = _aligned(16)
    module = ckt.InfoNCELoss(temperature=0.0101, learn_temperature=True, symmetric=True)
    optimizer = torch.optim.SGD(module.parameters(), lr=1.0)
    parameter = module.log_inverse_temperature
    module(q, k).backward()
    optimizer.step()  # past the bound
    stepped = parameter.item()
    assert stepped > LOG_CAP
    torch.testing.assert_close(module.temperature, 0.01)
    torch.testing.assert_close(
        module.state_dict()["log_inverse_temperature"], torch.tensor(LOG_CAP)
    )
    restored = ckt.InfoNCELoss(temperature=0.5, learn_temperature=True, symmetric=True)
    restored.load_state_dict(module.state_dict())
    expected = ck.info_nce_loss(q, k, temperature=0.01, symmetric=True)
    for loss_fn in (module, restored):
        torch.testing.assert_close(loss_fn(q, k), expected)
    # A gradient that would raise it further leaves it where it is (no drift) ...
    for _ in range(3):
        optimizer.zero_grad()
        module(q, k).backward()
        optimizer.step()
    assert parameter.item() == stepped
    # ... and one that lowers it moves it at once: CLIP's gradient at the bound.
    optimizer.zero_grad()
    module(q, _far(k)).backward()
    optimizer.step()
    logit_scale = torch.nn.Parameter(torch.tensor(LOG_CAP))
    _clip_reference(q, _far(k), logit_scale).backward()
    assert logit_scale.grad > stepped - LOG_CAP  # enough to come back below the bound
    torch.testing.assert_close(parameter.detach(), stepped - logit_scale.grad)
    assert module.temperature > 0.01


def test_learned_temperature_under_functional_call_reads_the_given_tensor() -> None:
    q, k = _aligned(12)
    module = _learned(2.0)
    given = torch.tensor(10.0, requires_grad=True)
    loss = torch.func.functional_call(module, {"log_inverse_temperature": given}, (q, k))
    torch.testing.assert_close(loss, ck.info_nce_loss(q, k, temperature=0.01, symmetric=True))
    assert given._version == 0
    assert given.item() == 10.0
    assert module.log_inverse_temperature.item() == 2.0


def test_learned_temperature_with_stacked_module_states_under_vmap() -> None:
    q, k = _aligned(14)
    models = [_learned(2.0), _learned(10.0), _learned(3.0)]
    params, buffers = torch.func.stack_module_state(models)
    stacked = params["log_inverse_temperature"]
    before = stacked.detach().clone()
    base = copy.deepcopy(models[0]).to("meta")

    def loss(params: Any, buffers: Any, keys: Any) -> Any:
        return torch.func.functional_call(base, (params, buffers), (q, keys))

    values = torch.func.vmap(loss, in_dims=(0, 0, None))(params, buffers, k)
    expected = [
        ck.info_nce_loss(q, k, temperature=t, symmetric=True)
        for t in (1 / math.e**2, 0.01, 1 / math.e**3)
    ]
    torch.testing.assert_close(values, torch.stack(expected))
    assert torch.equal(stacked.detach(), before)
    # Per-model gradients, as each module's own backward gives them (the
    # one past the bound: 0 for keys near their queries, CLIP's for far).
    for keys in (k, _far(k)):
        grads = torch.func.vmap(torch.func.grad(loss), in_dims=(0, 0, None))(params, buffers, keys)
        for i, model in enumerate(models):
            model.zero_grad()
            model(q, keys).backward()
            torch.testing.assert_close(
                grads["log_inverse_temperature"][i], model.log_inverse_temperature.grad
            )
    assert torch.equal(stacked.detach(), before)


@DYNAMO_LRU_CACHE
def test_learned_temperature_under_torch_compile() -> None:
    q, k = _aligned(12)
    module = _learned(10.0)
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    loss = compiled(q, _far(k))
    torch.testing.assert_close(
        loss, ck.info_nce_loss(q, _far(k), temperature=0.01, symmetric=True)
    )
    loss.backward()
    logit_scale = torch.nn.Parameter(torch.tensor(LOG_CAP))
    _clip_reference(q, _far(k), logit_scale).backward()
    torch.testing.assert_close(module.log_inverse_temperature.grad, logit_scale.grad)
    assert module.log_inverse_temperature.item() == 10.0


def test_learned_temperature_state_dict_round_trip() -> None:
    module = ckt.InfoNCELoss(temperature=0.07, learn_temperature=True)
    with torch.no_grad():
        module.log_inverse_temperature.fill_(3.0)
    restored = ckt.InfoNCELoss(temperature=0.5, learn_temperature=True)
    restored.load_state_dict(module.state_dict())
    assert list(module.state_dict()) == ["log_inverse_temperature"]
    torch.testing.assert_close(restored.log_inverse_temperature, module.log_inverse_temperature)
    q, k = _randn(5, 3, seed=8).float(), _randn(5, 3, seed=9).float()
    torch.testing.assert_close(restored(q, k), ck.info_nce_loss(q, k, temperature=math.exp(-3)))


def test_fixed_temperature_has_no_parameters() -> None:
    module = ckt.InfoNCELoss(temperature=0.07)
    assert list(module.parameters()) == []
    assert module.state_dict() == {}
    assert "temperature=0.07" in repr(module)


# Every constructor argument, checked at construction (not at the first
# forward), by the functions' own rules.
BAD_ARGUMENTS = [
    (ckt.NTXentLoss, {"temperature": 0}, ValueError, "temperature must be a positive finite"),
    (ckt.NTXentLoss, {"temperature": float("nan")}, ValueError, "temperature"),
    (ckt.InfoNCELoss, {"temperature": float("inf")}, ValueError, "temperature"),
    (ckt.InfoNCELoss, {"temperature": True}, TypeError, "temperature must be a positive real"),
    (ckt.InfoNCELoss, {"temperature": "0.1"}, TypeError, "temperature"),
    (ckt.CoSENTLoss, {"scale": -1}, ValueError, "scale must be a positive finite"),
    (ckt.CoSENTLoss, {"scale": "20"}, TypeError, "scale"),
    (ckt.CosineTripletLoss, {"margin": "1"}, TypeError, "margin must be a real number"),
    (ckt.CosineEmbeddingLoss, {"margin": float("nan")}, ValueError, "margin must be finite"),
    (ckt.InfoNCELoss, {"reduction": "avg"}, ValueError, "reduction must be one of"),
    (ckt.CosineTripletLoss, {"reduction": "batchmean"}, ValueError, "reduction"),
    (ckt.CosineEmbeddingLoss, {"reduction": None}, ValueError, "reduction"),
    (ckt.CosineDistanceLoss, {"reduction": "avg"}, ValueError, "sum_by_nonzero_weights"),
    (ckt.InfoNCELoss, {"symmetric": "no"}, TypeError, "symmetric must be True or False"),
    (ckt.InfoNCELoss, {"learn_temperature": 1}, TypeError, "learn_temperature"),
    (ckt.InfoNCELoss, {"gather": "yes"}, TypeError, "gather must be True or False"),
    (ckt.NTXentLoss, {"gather": 1}, TypeError, "gather"),
    (ckt.CosineTripletLoss, {"swap": "no"}, TypeError, "swap"),
    (ckt.CosineDistanceLoss, {"assume_normalized": None}, TypeError, "assume_normalized"),
    (ckt.CoSENTLoss, {"axis": 1.0}, TypeError, "axis must be an integer"),
    (ckt.CosineEmbeddingLoss, {"axis": True}, TypeError, "axis"),
    (ckt.CosineDistanceLoss, {"eps": 0.0}, ValueError, "eps must be a positive finite"),
    (ckt.NTXentLoss, {"eps": "1e-8"}, TypeError, "eps"),
    (ckt.InfoNCELoss, {"temperature": 0.001, "learn_temperature": True}, ValueError, "clamped"),
]


@pytest.mark.parametrize(
    ("module", "arguments", "error", "match"),
    BAD_ARGUMENTS,
    ids=[f"{m.__name__}-{next(iter(a))}" for m, a, _, _ in BAD_ARGUMENTS],
)
def test_constructors_check_every_argument(
    module: Any, arguments: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        module(**arguments)


def test_constructors_take_numpy_scalars_as_python_ones() -> None:
    module = ckt.InfoNCELoss(temperature=np.float32(0.5), symmetric=np.bool_(True))
    assert module.options["symmetric"] is True
    assert type(module.temperature) is float
    assert ckt.CoSENTLoss(scale=np.int64(20), axis=np.int64(-1)).options == {
        "scale": 20.0,
        "axis": -1,
        "eps": None,
    }
    distance = ckt.CosineDistanceLoss(reduction="sum_by_nonzero_weights", eps=1e-30)
    assert distance.options["eps"] == 1e-30


def test_gather_without_a_process_group_is_the_plain_loss() -> None:
    assert not torch.distributed.is_initialized()
    q, k = _randn(6, 5, seed=20), _randn(7, 5, seed=21)
    loss = ckt.InfoNCELoss(temperature=0.1, gather=True)(q, k)
    torch.testing.assert_close(loss, ck.info_nce_loss(q, k, temperature=0.1), rtol=0, atol=0)
    labels = torch.tensor([0, 1, 0, 2, 1, 2])
    loss = ckt.NTXentLoss(temperature=0.2, gather=True)(q, labels)
    torch.testing.assert_close(loss, ck.ntxent_loss(q, labels, temperature=0.2), rtol=0, atol=0)
    assert "gather=True" in repr(ckt.NTXentLoss(gather=True))


@pytest.mark.parametrize("name", MODULES)
def test_modules_refuse_inputs_on_two_devices(name: str) -> None:
    module, _, args = _modules_and_calls()[name]
    on_meta = (*args[:-1], args[-1].to("meta"))
    with pytest.raises(ValueError, match=r"on cpu.* on meta"):
        module(*on_meta)


def test_learned_temperature_on_another_device_than_the_inputs() -> None:
    module = ckt.InfoNCELoss(learn_temperature=True).to("meta")
    with pytest.raises(ValueError, match="queries on cpu, keys on cpu, temperature on meta"):
        module(*_aligned(18))


def test_importing_cosinekit_does_not_import_torch() -> None:
    code = (
        "import sys, cosinekit; "
        "assert 'torch' not in sys.modules, 'torch was imported'; "
        "assert 'cosinekit.torch' not in sys.modules"
    )
    env_path = str(__import__("pathlib").Path(ck.__file__).parent.parent)
    subprocess.run(
        [sys.executable, "-c", code], check=True, env={"PYTHONPATH": env_path}, timeout=120
    )
