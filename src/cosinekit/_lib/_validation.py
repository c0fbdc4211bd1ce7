"""Input validation shared by every public function.

Everything here looks only at types, shapes and dtypes, never at values, so it
is safe on lazy (Dask) and traced (JAX, ``torch.compile``) arrays.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from types import ModuleType
from typing import Any, cast

import numpy as np
from array_api_compat import array_namespace, is_array_api_obj

from ._strategy.autodiff import stop_gradient
from ._strategy.mode import Mode, execution_mode, may_write_caches
from ._strategy.namespaces import default_real_floating

Array = Any
Shape = tuple[int | None, ...]


def _type_name(obj: object) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


# Each group of argument types that passed `namespace_of` before: its
# namespace (array-api-compat looks at the types alone), and whether its
# arrays need no check at all on later calls (no shape that can hold Dask's
# NaN sizes, as torch.Size cannot). Small calls are dominated by such checks.
_TYPE_GROUPS: dict[tuple[type, ...], tuple[ModuleType, bool]] = {}


def namespace_of(*arrays: Array, names: Sequence[str], xp: ModuleType | None) -> ModuleType:
    """Return the array namespace shared by ``arrays``.

    Raises ``TypeError`` for a non-array (list, scalar, ``None``), for arrays
    whose values carry meaning the array API does not see (NumPy masked
    arrays; ``np.matrix`` is no array-API object at all) and for arrays of
    different libraries, naming the offending types.
    """
    types = tuple(map(type, arrays))
    known = _TYPE_GROUPS.get(types)
    if known is not None and known[1]:
        return known[0] if xp is None else xp
    for name, x in zip(names, arrays, strict=True):
        if not is_array_api_obj(x) or isinstance(x, (bool, int, float, complex)):
            msg = f"{name} must be an array of an array-API library, got {_type_name(x)}"
            raise TypeError(msg)
        if isinstance(x, np.ma.MaskedArray):
            # Every array-API operation would ignore the mask, silently.
            msg = (
                f"{name} is a NumPy masked array ({_type_name(x)}), whose mask the array "
                "API would ignore; pass x.filled(value) or x.data to say what the masked "
                "values mean (for row-wise functions feature_weights=1 - x.mask leaves "
                "masked features out)"
            )
            raise TypeError(msg)
        if any(isinstance(n, float) and math.isnan(n) for n in getattr(x, "shape", ())):
            # Dask after boolean indexing: the sizes are NaN, and Dask refuses
            # to broadcast or even align such arrays ("cannot broadcast shape
            # (nan, 3) to shape (nan, 3)").
            msg = (
                f"{name} has unknown chunk sizes (shape {tuple(x.shape)}), as Dask arrays "
                f"have after boolean indexing; call {name}.compute_chunk_sizes() first"
            )
            raise ValueError(msg)
    if xp is not None:
        return xp
    if known is not None:
        return known[0]
    try:
        namespace = cast(ModuleType, array_namespace(*arrays))
    except TypeError as exc:
        kinds = sorted({_type_name(x) for x in arrays})
        msg = (
            f"all arrays must come from one array library, got {' and '.join(kinds)}; "
            "convert them to one library first"
        )
        raise TypeError(msg) from exc
    if may_write_caches():
        _TYPE_GROUPS[types] = (namespace, all(type(x.shape) is not tuple for x in arrays))
    return namespace


def resolve(
    *arrays: Array, names: Sequence[str], xp: ModuleType | None
) -> tuple[ModuleType, Mode]:
    """The namespace of ``arrays`` (see `namespace_of`) and the call's `Mode`.

    The one place a public function learns how it may run: every array
    argument counts, and arrays on different devices are a ``ValueError``.
    """
    namespace = namespace_of(*arrays, names=names, xp=xp)
    return namespace, execution_mode(namespace, *arrays, names=names)


def floating_dtypes(xp: ModuleType, *arrays: Array) -> tuple[Any, Any]:
    """Return ``(result_dtype, compute_dtype)`` for ``arrays``.

    Real floating dtypes promote among themselves. Integer and boolean arrays
    count as the namespace's default real floating dtype. Complex and other
    dtypes are a ``TypeError``. Half-precision results (float16, bfloat16) are
    computed in float32.
    """
    dtype = arrays[0].dtype
    if dtype in (xp.float32, xp.float64) and all(x.dtype == dtype for x in arrays[1:]):
        # The common case, without the isdtype calls (each a Python function).
        return dtype, dtype
    candidates = []
    for x in arrays:
        if xp.isdtype(x.dtype, "real floating"):
            candidates.append(x.dtype)
        elif xp.isdtype(x.dtype, ("integral", "bool")):
            candidates.append(default_real_floating(xp))
        elif xp.isdtype(x.dtype, "complex floating"):
            msg = f"complex inputs are not supported (got dtype {x.dtype})"
            raise TypeError(msg)
        else:
            msg = f"unsupported dtype {x.dtype}: expected real floating, integer or boolean"
            raise TypeError(msg)
    # One dtype (the common case) needs no promotion lookup.
    same = all(dtype == candidates[0] for dtype in candidates)
    result_dtype = candidates[0] if same else xp.result_type(*candidates)
    compute_dtype = xp.float32 if xp.finfo(result_dtype).bits < 32 else result_dtype
    return result_dtype, compute_dtype


def real_number(value: object) -> float | None:
    """``value`` as a float if it is a real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def normalize_axis(axis: object, ndim: int) -> int:
    """Return ``axis`` as a negative index into an array of rank ``ndim``."""
    # operator.index: under torch.compile(dynamic=True) an axis that is an
    # argument of the compiled function is a symbolic int (its type reads as
    # int), and index() makes it a Python int, as the array API's axis
    # arguments need.
    if type(axis) is int and -ndim <= axis < 0:
        return operator.index(axis)  # the common case, without the abstract-class check
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        msg = f"axis must be an integer, got {_type_name(axis)}"
        raise TypeError(msg)
    index = operator.index(axis)
    if not -ndim <= index < ndim:
        msg = f"axis {index} is out of range for inputs with {ndim} dimension(s)"
        raise ValueError(msg)
    return index - ndim if index >= 0 else index


def _known(n: int | float | None) -> bool:
    return n is not None and not (isinstance(n, float) and math.isnan(n))


def integer(value: object, name: str) -> int:
    """``value`` as an ``int``; a bool, float or anything else is a ``TypeError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        msg = f"{name} must be an integer, got {_type_name(value)}"
        raise TypeError(msg)
    return int(value)


def positive_integer(value: object, name: str) -> int:
    """``value`` as a positive ``int``: a ``TypeError`` or ``ValueError`` naming it."""
    number = integer(value, name)
    if number <= 0:
        msg = f"{name} must be positive, got {number}"
        raise ValueError(msg)
    return number


def known_size(x: Array, axis: int, name: str) -> int:
    """The size of ``x`` along ``axis``; an unknown (lazy) size is a ``ValueError``."""
    size = x.shape[axis]
    if not _known(size):
        msg = f"{name} must have a known shape, got {tuple(x.shape)}"
        raise ValueError(msg)
    return int(size)


def known_count(x: Array) -> int | None:
    """The number of elements of ``x``, or None where a size is unknown (lazy)."""
    shape = tuple(x.shape)
    return math.prod(shape) if all(_known(n) for n in shape) else None


def broadcast_shape(*shapes: Shape, names: Sequence[str]) -> Shape:
    """Broadcast ``shapes`` by the array-API rules, or raise ``ValueError``.

    Unknown sizes (``None``, as lazy arrays may have) broadcast with
    anything; the library checks those when it runs. (Dask's NaN sizes are
    refused earlier, by `namespace_of`: Dask cannot broadcast them.)
    """
    ndim = max(len(s) for s in shapes)
    result: list[int | None] = []
    for i in range(-ndim, 0):
        sizes = [s[i] for s in shapes if len(s) >= -i]
        known = {n for n in sizes if _known(n) and n != 1}
        if len(known) > 1:
            described = ", ".join(
                f"{name} {tuple(s)}" for name, s in zip(names, shapes, strict=True)
            )
            msg = f"shapes do not broadcast: {described}"
            raise ValueError(msg)
        if known:
            result.append(known.pop())
        elif all(_known(n) for n in sizes):
            result.append(1)
        else:
            result.append(None)
    return tuple(result)


def positive_eps(eps: object, *, xp: ModuleType, dtype: Any) -> float | None:
    """Check ``eps`` against the compute ``dtype``: ``None`` or a positive finite number.

    An ``eps`` above the dtype's largest finite value is a ``ValueError``: it
    would overflow to inf. One below the dtype's smallest normal number
    returns ``None``: no norm the dtype represents to full precision lies
    below it, and as a subnormal (or flushed to zero, as XLA does on the CPU)
    it would divide by 0. Such an ``eps`` clamps only zero norms, as ``None``.
    """
    if eps is None:
        return None
    value = real_number(eps)
    if value is None:
        msg = f"eps must be None or a positive real number, got {_type_name(eps)}"
        raise TypeError(msg)
    if not (math.isfinite(value) and value > 0):
        msg = f"eps must be None or a positive finite number, got {eps!r}"
        raise ValueError(msg)
    info = xp.finfo(dtype)
    if value > float(info.max):
        msg = (
            f"eps={eps!r} is above the largest finite value {float(info.max):g} of the "
            f"compute dtype {dtype}"
        )
        raise ValueError(msg)
    if value < float(info.smallest_normal):
        return None
    return value


def choice(value: object, valid: Sequence[str], name: str) -> str:
    """Check that ``value`` is one of the strings in ``valid``."""
    if not isinstance(value, str) or value not in valid:
        listed = ", ".join(repr(v) for v in valid)
        msg = f"{name} must be one of {listed}; got {value!r}"
        raise ValueError(msg)
    return value


def flag(value: object, name: str) -> bool:
    """A boolean option: ``bool`` or a NumPy boolean; anything else is a ``TypeError``.

    Truthy strings and numbers are refused: ``symmetric="no"`` must not
    mean True.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    msg = f"{name} must be True or False, got {_type_name(value)}"
    raise TypeError(msg)


def finite_real(value: object, name: str) -> float:
    """A finite real Python number (a margin): a ``TypeError`` or ``ValueError`` otherwise."""
    number = real_number(value)
    if number is None:
        msg = f"{name} must be a real number, got {_type_name(value)}"
        raise TypeError(msg)
    if not math.isfinite(number):
        msg = f"{name} must be finite, got {value!r}"
        raise ValueError(msg)
    return number


def vector_of(x: Array, n: int | None, name: str, like: Array, owner: str) -> None:
    """Check that ``x`` is a 1-D array of ``n`` entries of ``like``'s (``owner``'s) library."""
    namespace_of(like, x, names=(owner, name), xp=None)
    size = x.shape[0] if x.ndim == 1 else None
    # Lazy (Dask) sizes are None or NaN: the library checks those when it runs.
    if x.ndim != 1 or (isinstance(n, int) and isinstance(size, int) and size != n):
        msg = f"{name} must have shape ({n},), got shape {tuple(x.shape)}"
        raise ValueError(msg)


def rows_of(x: Array, name: str) -> None:
    """Check that ``x`` is 2-D: ``(rows, features)``."""
    if x.ndim != 2:
        msg = f"{name} must have shape (rows, features), got shape {tuple(x.shape)}"
        raise ValueError(msg)


def positive_scalar(
    xp: ModuleType, mode: Mode, value: object, name: str, like: Array, *, inverse: bool
) -> Array | float:
    """``value`` as a positive Python number, or as a 0-d array of ``like``'s dtype.

    A temperature (``inverse=True``: the logits are divided by it) or a
    scale (multiplied). An array keeps its gradient (a learnable
    temperature). A value that is not positive and finite, or whose inverse
    (temperature) or itself (scale) overflows ``like``'s dtype, is a
    ``ValueError`` where it can be read: always for a Python number, and for
    an array where the call's reads are free. The checks are plain
    comparisons, so a symbolic number (``torch.compile(dynamic=True)``)
    passes through them as guards.
    """
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        _check_positive(xp, value, name, like.dtype, inverse=inverse)
        return value
    namespace_of(like, value, names=("inputs", name), xp=None)
    array: Array = value
    if array.ndim != 0:
        msg = f"{name} must be a Python number or a 0-d array, got shape {tuple(array.shape)}"
        raise ValueError(msg)
    if not xp.isdtype(array.dtype, ("real floating", "integral")):
        msg = f"{name} must be real, got dtype {array.dtype}"
        raise TypeError(msg)
    if mode.host_reads_free:
        # Read before the cast to the compute dtype, which would turn an
        # overflowing value into inf (or 0) and the error into a vaguer one.
        _check_positive(xp, float(stop_gradient(xp, array)), name, like.dtype, inverse=inverse)
    return xp.astype(array, like.dtype, copy=False)


def positive_number(value: object, name: str) -> float:
    """A positive finite real Python number: a temperature or scale fixed in advance.

    The checks of `positive_scalar` that need no array: a bool or anything
    but a real number is a ``TypeError``; zero, a negative, NaN or inf a
    ``ValueError``. Whether ``1 / value`` or ``value`` overflows depends on
    the dtype of the call, which checks it.
    """
    number = real_number(value)
    if number is None:
        msg = f"{name} must be a positive real number, got {_type_name(value)}"
        raise TypeError(msg)
    _check_finite_positive(number, name)
    return number


def _check_finite_positive(value: Any, name: str) -> None:
    # `value > 0` is False for NaN; `value < inf` excludes +inf. Plain
    # comparisons, so that a symbolic number passes them as guards.
    if not (value > 0 and value < math.inf):
        msg = f"{name} must be a positive finite number, got {value!r}"
        raise ValueError(msg)


def _check_positive(xp: ModuleType, value: Any, name: str, dtype: Any, *, inverse: bool) -> None:
    _check_finite_positive(value, name)
    largest = float(xp.finfo(dtype).max)
    if (1 / largest > value) if inverse else (value > largest):
        what = "1 / " + name if inverse else name
        msg = (
            f"{name}={value!r}: {what} overflows the compute dtype {dtype} "
            f"(largest finite value {largest:g})"
        )
        raise ValueError(msg)
