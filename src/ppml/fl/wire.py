"""Payload formats FL protocols put on a :class:`~ppml.fl.channel.Channel`: numeric arrays and
small JSON headers. No pickle; every length is checked before it is used.

Array layout (all integers big-endian)::

    magic "PFA1" (4) | dtype (1: 0 = float64, 1 = int64, 2 = float32) | ndim u8 | ndim x u32 dims
    | product(dims) x item, little-endian (NumPy's native order on every platform ppml runs on)
"""

from __future__ import annotations

import json
import struct
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from ppml.errors import InvalidPeerMessage, UsageError

__all__ = ["pack_array", "pack_json", "unpack_array", "unpack_json"]

_MAGIC: Final = b"PFA1"
_DTYPES: Final[dict[int, np.dtype[Any]]] = {0: np.dtype("<f8"), 1: np.dtype("<i8"), 2: np.dtype("<f4")}
_CODES: Final[dict[np.dtype[Any], int]] = {dtype: code for code, dtype in _DTYPES.items()}
_MAX_DIMS: Final = 4
_MAX_JSON: Final = 1 << 20


def pack_array(array: npt.ArrayLike) -> bytes:
    """Serialise a float64, float32 or int64 array (other numeric types become float64)."""
    values = np.asarray(array)
    if values.dtype.newbyteorder("<") not in _CODES:
        values = values.astype("<f8")
    values = values.astype(values.dtype.newbyteorder("<"), copy=False)
    if values.ndim > _MAX_DIMS:
        raise UsageError(f"arrays of at most {_MAX_DIMS} dimensions go on the wire")
    header = _MAGIC + struct.pack(">BB", _CODES[values.dtype], values.ndim)
    header += b"".join(struct.pack(">I", dim) for dim in values.shape)
    return header + np.ascontiguousarray(values).tobytes()


def unpack_array(data: bytes, *, shape: tuple[int | None, ...] | None = None,
                 dtype: str | None = None) -> npt.NDArray[Any]:
    """Parse :func:`pack_array`'s bytes; ``shape`` (None for a free dimension) and ``dtype`` say
    what the protocol expects at this step.

    Raises:
        InvalidPeerMessage: the bytes do not parse, or the array is not of the expected shape/type.
    """
    if len(data) < 6 or data[:4] != _MAGIC:
        raise InvalidPeerMessage("not an array message")
    code, ndim = struct.unpack_from(">BB", data, 4)
    if code not in _DTYPES or ndim > _MAX_DIMS or len(data) < 6 + 4 * ndim:
        raise InvalidPeerMessage("array header out of bounds")
    dims = struct.unpack_from(f">{ndim}I", data, 6)
    item = _DTYPES[code]
    body = memoryview(data)[6 + 4 * ndim:]
    count = 1
    for dim in dims:
        count *= dim
    if count * item.itemsize != len(body):
        raise InvalidPeerMessage("array length does not match its shape")
    if dtype is not None and item != np.dtype(dtype).newbyteorder("<"):
        raise InvalidPeerMessage(f"expected a {dtype} array, got {item.name}")
    if shape is not None and (len(shape) != ndim or any(want is not None and want != got
                                                          for want, got in zip(shape, dims, strict=True))):
        raise InvalidPeerMessage(f"expected an array of shape {shape}, got {dims}")
    values = np.frombuffer(body, dtype=item).reshape(dims).copy()
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise InvalidPeerMessage("array holds a non-finite value")
    return values


def pack_json(value: Any) -> bytes:
    """A small JSON header (parameters, sizes); never for bulk data."""
    data = json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()
    if len(data) > _MAX_JSON:
        raise UsageError("a JSON message is limited to 1 MiB")
    return data


def unpack_json(data: bytes) -> Any:
    if len(data) > _MAX_JSON:
        raise InvalidPeerMessage("JSON message over 1 MiB")
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidPeerMessage(f"malformed JSON message ({type(exc).__name__})") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
