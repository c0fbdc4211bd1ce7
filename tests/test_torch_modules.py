"""``cosinekit.torch``: the loss modules equal the functions, the learned temperature.

The learned temperature is checked against CLIP's formulation written here
in plain torch (``logit_scale.exp() * img @ txt.T``, with the parameter
clamped to ``log(100)``), values and gradients.
"""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import cosinekit as ck

torch = pytest.importorskip("torch", reason="cosinekit.torch needs torch")
ckt = pytest.importorskip("cosinekit.torch")

# PyTorch modules on PyTorch tensors: the torch session runs them.
pytestmark = pytest.mark.backends("torch")

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


def test_learned_temperature_is_clamped_like_clip() -> None:
    q, k = _randn(8, 4, seed=6).float(), _randn(8, 4, seed=7).float()
    module = ckt.InfoNCELoss(temperature=0.05, learn_temperature=True)
    with torch.no_grad():
        module.log_inverse_temperature.fill_(10.0)  # 1/t = 22026: as an optimizer might
    loss = module(q, k)
    # Clamped in place to log(100), as CLIP clamps its logit_scale after each step.
    torch.testing.assert_close(
        module.log_inverse_temperature.detach(), torch.tensor(math.log(100.0))
    )
    torch.testing.assert_close(module.temperature, 0.01)
    torch.testing.assert_close(loss, ck.info_nce_loss(q, k, temperature=0.01))
    loss.backward()
    # The gradient still flows at the bound, so the temperature can move back.
    assert module.log_inverse_temperature.grad != 0
    assert torch.isfinite(module.log_inverse_temperature.grad)


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


def test_module_argument_errors() -> None:
    with pytest.raises(ValueError, match="clamped"):
        ckt.InfoNCELoss(temperature=0.001, learn_temperature=True)
    with pytest.raises(ValueError, match="temperature"):
        ckt.InfoNCELoss(temperature=0.0)
    with pytest.raises(ValueError, match="reduction"):
        ckt.CosineTripletLoss(reduction="batchmean")(*(_randn(2, 3),) * 3)


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
