"""What API.md promises of every loss, for every loss of the capability table.

The losses are the public functions named ``*_loss``; each is called as its
plain row of ``_calls.ROWS``, so a new loss takes part once it has rows
(``test_transforms.py`` fails until it does). API.md, "hostile inputs,
second pass": a batch of size 0 gives 0, still connected to its inputs
(the gradients are 0), and a NaN row makes the reduced loss NaN. The
losses' own files test the finer rules (which rows a NaN reaches, finite
gradients for the finite rows).
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from _calls import ROWS, Row
from _matrix import plain
from _support import Backend, asarray, to_numpy
from cosinekit._lib._capabilities import CAPABILITIES

LOSSES = [row for row in ROWS if row.function.endswith("_loss") and plain(row)]


def test_every_loss_has_a_plain_row() -> None:
    names = sorted(name for name in CAPABILITIES if name.endswith("_loss"))
    assert sorted(row.function for row in LOSSES) == names


@pytest.mark.parametrize("row", LOSSES, ids=lambda row: row.function)
def test_an_empty_batch_gives_zero_connected_to_its_inputs(
    xp: ModuleType, library: Backend, row: Row
) -> None:
    # Every array of at least one dimension loses its rows; 0-d ones stay.
    values = {name: v[:0] if v.ndim else v for name, v in row.values().items()}
    arrays = {name: asarray(xp, v) for name, v in values.items()}
    if library is Backend.TORCH:
        for name in row.capabilities.differentiable:
            if name in arrays and arrays[name].is_floating_point():
                arrays[name].requires_grad_(True)
    result = row.call(arrays)
    assert to_numpy(result).shape == ()
    assert float(to_numpy(result)) == 0.0
    if library is Backend.TORCH:
        result.backward()
        for name in row.capabilities.differentiable:
            grad = arrays[name].grad if name in arrays else None
            if grad is not None:
                assert not grad.any(), name


@pytest.mark.parametrize("row", LOSSES, ids=lambda row: row.function)
def test_a_nan_row_makes_the_loss_nan(xp: ModuleType, row: Row) -> None:
    values = row.values()
    # The first embedding argument (2-D) gets a NaN in its first row.
    name = next(n for n in row.capabilities.differentiable if n in values and values[n].ndim == 2)
    values[name] = values[name].copy()
    values[name][0, 0] = np.nan
    result = row.call({n: asarray(xp, v) for n, v in values.items()})
    assert np.isnan(float(to_numpy(result))), name
