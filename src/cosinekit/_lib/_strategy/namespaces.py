"""A namespace's default dtypes, also where ``__array_namespace_info__`` cannot run.

The standard answers "which dtype indexes" and "which real floating dtype is
the default" through ``xp.__array_namespace_info__().default_dtypes()``.
``torch.compile`` cannot trace that call as a process's first cosinekit call
(Dynamo cannot rebuild the info object it creates), so the libraries whose
answer is fixed get it directly; the others are asked once and remembered.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
from array_api_compat import is_jax_namespace, is_numpy_namespace, is_torch_namespace

from .mode import may_write_caches

_ASKED: dict[tuple[str, str], Any] = {}


def index_dtype(xp: ModuleType) -> Any:
    """The default integer dtype for indices in ``xp`` (``int64`` on PyTorch and NumPy)."""
    if is_torch_namespace(xp):
        return xp.int64
    if is_numpy_namespace(xp):
        return np.dtype(np.intp)
    if is_jax_namespace(xp):
        import jax

        # int64 where 64-bit types are enabled, else int32.
        return jax.dtypes.canonicalize_dtype(xp.int64)
    return _asked(xp, "indexing")


def default_real_floating(xp: ModuleType) -> Any:
    """The default real floating dtype of ``xp`` (PyTorch: ``torch.get_default_dtype()``)."""
    if is_torch_namespace(xp):
        import torch

        return torch.get_default_dtype()
    if is_numpy_namespace(xp):
        return np.dtype(np.float64)
    if is_jax_namespace(xp):
        import jax

        return jax.dtypes.canonicalize_dtype(xp.float64)
    return _asked(xp, "real floating")


def _asked(xp: ModuleType, kind: str) -> Any:
    key = (xp.__name__, kind)
    if key not in _ASKED:
        answer = xp.__array_namespace_info__().default_dtypes()[kind]
        if not may_write_caches():
            return answer
        _ASKED[key] = answer
    return _ASKED[key]
