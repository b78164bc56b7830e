"""Encrypted PyTorch checkpoints without pickle: :func:`save`, :func:`load` and :func:`load_into`.

A checkpoint is one ppml envelope (:mod:`ppml.core.envelope`) whose associated data is
``b"ppml-torch-checkpoint/1"``: an envelope made for anything else (an encrypted CSV, a file of
an encrypted model directory) is refused as :class:`~ppml.errors.InvalidCiphertext` before its
key is even asked for. The envelope's plaintext, format version 1 (integers big-endian; every
length is checked against its bound and against the data before use)::

    offset  size  field
    ------  ----  ---------------------------------------------------------------------
         0     8  magic              b"PPMLCKPT"
         8     1  version            0x01
         9     4  skeleton length J  1 ≤ J ≤ 64 MiB
        13     J  skeleton           UTF-8 JSON: the structure, tensors by index (below)
    13 + J     -  tensors            a safetensors file, tensor i named "i"; at least 8 bytes

The skeleton is ``{"tensors": N, "state": VALUE}`` where a VALUE is one of::

    null | true | false | 12 | 1.5 | "text"            a JSON scalar, as itself
    {"float": "nan" | "inf" | "-inf"}                 a float JSON cannot spell
    {"tensor": i}                                     tensor i of the safetensors part, 0 ≤ i < N
    {"list": [VALUE, …]}   {"tuple": [VALUE, …]}
    {"dict": [[KEY, VALUE], …]}                       KEY a JSON string or integer, as in Python
    {"odict": [[KEY, VALUE], …], "metadata": VALUE}   an OrderedDict, with the ``_metadata`` a
                                                      ``state_dict()`` carries ("metadata" optional)

nested at most 64 deep. So a round trip gives back the same structure with the same key types:
an optimizer's ``state_dict()`` has integer keys and tuples (Adam's ``betas``), a module's is an
``OrderedDict`` whose ``_metadata`` holds the per-module versions ``load_state_dict`` hands back
to each module. Each of the N tensors is used at least once. A tensor several entries share
(tied weights: the same view of the same memory) is stored once and comes back as one tensor in
each place; views that only overlap are stored as copies. Tensors come back on the CPU.

Nothing stored is ever unpickled: tensors go through ``safetensors.torch.save``/``load`` on
bytes, everything else through ``json``. A value that is neither a tensor nor a JSON scalar (nor
a dict, list or tuple of them) is refused when saving with :class:`~ppml.errors.UsageError`,
never pickled. The file is written beside its path and renamed into place after an fsync
(:class:`~ppml.core._files.AtomicOutput`), so a failed or killed save leaves nothing at that
path and an existing checkpoint survives a failed overwrite. The user manual is
``docs/torch.md``.
"""

from __future__ import annotations

import io
import json
import math
import struct
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, Final, cast

import safetensors.torch
import torch
from safetensors import SafetensorError

from ppml.core._files import AtomicOutput
from ppml.core.envelope import DEFAULT_SEGMENT_SIZE, EnvelopeHeader, EnvelopeReader, encrypt_stream
from ppml.core.keys import DataKeyProvider
from ppml.errors import InvalidCiphertext, OutputExists, UsageError

__all__ = [
    "ASSOCIATED_DATA",
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_DEPTH",
    "load",
    "load_into",
    "save",
]

MAGIC: Final = b"PPMLCKPT"
FORMAT_VERSION: Final = 1
#: The envelope's associated data: binds the file to this purpose and format version.
ASSOCIATED_DATA: Final = b"ppml-torch-checkpoint/1"
MAX_SKELETON_SIZE: Final = 64 << 20
#: How deep values may nest (a module's or an optimizer's state is 3 to 5 deep).
MAX_DEPTH: Final = 64
_PREFIX = struct.Struct(">8sBI")
_MIN_SAFETENSORS = 8
_NON_FINITE: Final = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
#: The dtypes safetensors stores (its format's list); anything else is refused when saving.
_DTYPES: Final = frozenset(
    getattr(torch, name) for name in (
        "float64", "float32", "float16", "bfloat16", "complex64", "int64", "int32", "int16", "int8", "uint64",
        "uint32", "uint16", "uint8", "bool", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
    ) if hasattr(torch, name)
)


def save(
    state: Mapping[Any, Any],
    path: Path | str,
    *,
    kms: DataKeyProvider,
    key_id: str,
    overwrite: bool = False,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> EnvelopeHeader:
    """Save ``state`` (a mapping: ``model.state_dict()``, or ``{"model": …, "optimizer": …,
    "epoch": 3}``) encrypted under a fresh data key wrapped by ``key_id`` in ``kms``.

    Raises:
        UsageError: ``state`` holds something that is neither a tensor nor a JSON scalar (nor a
            dict, list or tuple of them), a key that is neither a string nor an integer, a
            sparse or quantized tensor, or a dtype safetensors does not store. The message
            says where (``state['optimizer']['state'][0]['step']``).
        OutputExists: ``path`` exists and ``overwrite`` is false.
        KeyServiceError: the key service failed or does not know ``key_id``.
    """
    path = Path(path)
    if not isinstance(state, Mapping):
        raise UsageError(f"a checkpoint holds a mapping (a state_dict, or a dict of them), not a "
                         f"{_type_name(state)}")
    if path.exists() and not overwrite:
        raise OutputExists(path)
    encoder = _Encoder()
    try:
        encoded = encoder.value(state, 0)
    except _Refused as exc:
        where = exc.where[::-1]
        if len(where) > 12:
            where = [*where[:6], "…", *where[-5:]]
        raise UsageError(f"state{''.join(where)}: {exc.reason}") from None
    try:
        skeleton = json.dumps({"tensors": len(encoder.tensors), "state": encoded}, allow_nan=False,
                              separators=(",", ":")).encode()
    except ValueError as exc:  # an integer longer than Python converts to text (4300 digits)
        raise UsageError(f"the state holds a value JSON cannot carry: {exc}") from None
    if len(skeleton) > MAX_SKELETON_SIZE:
        raise UsageError(f"the checkpoint's structure takes {len(skeleton)} bytes of JSON, more than the format's "
                         f"{MAX_SKELETON_SIZE}: keep large data in tensors")
    tensors = safetensors.torch.save({str(i): tensor for i, tensor in enumerate(encoder.tensors)})
    source = _Concatenation(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(skeleton)), skeleton, tensors)
    return encrypt_stream(
        cast(BinaryIO, source), lambda: AtomicOutput(path, overwrite=overwrite, durable=True), kms=kms,
        key_id=key_id, associated_data=ASSOCIATED_DATA, segment_size=segment_size,
    )


def load(path: Path | str, *, kms: DataKeyProvider) -> dict[Any, Any]:
    """Decrypt, verify and decode a checkpoint written by :func:`save`; the key comes from ``kms``
    (so, for a key whose release needs attestation, only inside an attested TEE). The whole file
    is authenticated before anything is decoded; ``torch.load`` and pickle are never called.

    Raises:
        InputNotFound, NotAFile: no such file, or not a regular file.
        NotAnEnvelope: ``path`` is not a ppml file (a plaintext ``torch.save`` file, say).
        InvalidCiphertext: the wrong key (another app's, another key service's), a file altered,
            truncated or extended, or a ppml envelope that is not a checkpoint.
        KeyServiceError: the key service failed or refused the key (PermissionDenied outside the
            TEE a key's release policy names).
    """
    path = Path(path)
    with EnvelopeReader(path, kms=kms, associated_data=ASSOCIATED_DATA) as reader:
        plaintext = bytearray(reader.plaintext_size)
        view = memoryview(plaintext)
        for index in range(reader.segment_count):
            start, _ = reader.segment_plaintext_range(index)
            reader.read_segment_into(index, view[start:])
        view.release()
    return _decode(plaintext, str(path))


def load_into(module: torch.nn.Module, path: Path | str, *, kms: DataKeyProvider, strict: bool = True,
              state_key: str | None = None) -> Any:
    """Load a checkpoint into ``module`` (``module.load_state_dict``), after checking every tensor
    against the module: a checkpoint that does not fit changes nothing in it. (``load_state_dict``
    alone copies every tensor that fits before it reports the ones that do not.)

    ``state_key`` picks the module's state out of a checkpoint that holds more
    (``{"model": …, "optimizer": …}``). Returns what ``load_state_dict`` returns (the missing and
    unexpected keys; both empty when ``strict``).

    Raises:
        UsageError: the checkpoint does not fit: missing or (``strict``) unexpected names, a
            shape that differs, a value that is not a tensor where the module has one, or no
            mapping under ``state_key``.
        NotAnEnvelope, InvalidCiphertext, KeyServiceError: as :func:`load`.
    """
    state: Any = load(path, kms=kms)
    if state_key is not None:
        if not isinstance(state.get(state_key), Mapping):
            keys = ", ".join(repr(k) for k in list(state)[:10])
            raise UsageError(f"{path} holds no state dict under {state_key!r} (its keys: {keys})")
        state = state[state_key]
    expected = module.state_dict()
    problems = _misfits(expected, state, strict=strict)
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        error = UsageError(f"{path} does not fit the {_type_name(module)}; nothing was loaded: "
                           f"{'; '.join(problems[:8])}{more}")
        nested = [repr(key) for key, value in state.items() if isinstance(value, Mapping)]
        if nested and not any(name in state for name in expected):
            error.hint = f"the checkpoint holds mappings under {', '.join(nested[:5])}: pick the module's state " \
                         "with state_key= (ppml serve-model --state-key)"
        raise error
    return module.load_state_dict(state, strict=strict)


def _misfits(expected: Mapping[str, Any], state: Mapping[Any, Any], *, strict: bool) -> list[str]:
    problems = [f"{name!r} is not in the module" for name in state if strict and name not in expected]
    for name, target in expected.items():
        if name not in state:
            if strict:
                problems.append(f"{name} is missing")
            continue
        value = state[name]
        if not isinstance(target, torch.Tensor):
            continue  # a module's extra state: its own set_extra_state checks it
        if not isinstance(value, torch.Tensor):
            problems.append(f"{name} is a {_type_name(value)}, not a tensor")
        elif value.shape != target.shape:
            problems.append(f"{name} has shape {list(value.shape)}, the module {list(target.shape)}")
    return problems


# -- encoding ----------------------------------------------------------------------------------


class _Refused(Exception):
    """A value the format does not hold; ``where`` collects the path on the way up."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.where: list[str] = []


def _type_name(value: object) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


class _Encoder:
    """Turns a state into its skeleton, collecting the tensors to store (each once)."""

    def __init__(self) -> None:
        self.tensors: list[torch.Tensor] = []
        self._index: dict[tuple[Any, ...], int] = {}
        self._storages: set[tuple[Any, ...]] = set()

    def value(self, value: Any, depth: int) -> Any:
        if value is None or value is True or value is False:
            return value
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            number = float(value)
            if math.isfinite(number):
                return number
            return {"float": "nan" if math.isnan(number) else ("inf" if number > 0 else "-inf")}
        if isinstance(value, str):
            return str(value)
        if isinstance(value, torch.Tensor):
            return {"tensor": self._tensor(value)}
        if depth >= MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, Mapping):
            pairs = []
            for key, item in value.items():
                stored_key = _key(key)
                try:
                    pairs.append([stored_key, self.value(item, depth + 1)])
                except _Refused as exc:
                    exc.where.append(f"[{key!r}]")
                    raise
            if not isinstance(value, OrderedDict):
                return {"dict": pairs}
            node: dict[str, Any] = {"odict": pairs}
            metadata = getattr(value, "_metadata", None)
            if metadata is not None:
                try:
                    node["metadata"] = self.value(metadata, depth + 1)
                except _Refused as exc:
                    exc.where.append("._metadata")
                    raise
            return node
        if isinstance(value, list | tuple):
            items = []
            for position, item in enumerate(value):
                try:
                    items.append(self.value(item, depth + 1))
                except _Refused as exc:
                    exc.where.append(f"[{position}]")
                    raise
            return {"tuple" if isinstance(value, tuple) else "list": items}
        raise _Refused(f"a value of type {_type_name(value)} is neither a tensor nor a JSON scalar (None, bool, "
                       "int, float, str) nor a dict, list or tuple of them; nothing is pickled, so convert it (or "
                       "leave it out)")

    def _tensor(self, tensor: torch.Tensor) -> int:
        if tensor.layout != torch.strided:
            raise _Refused(f"a {tensor.layout} tensor: make it dense (.to_dense()) first")
        if tensor.is_quantized or tensor.device.type == "meta":
            raise _Refused("a quantized tensor or one on the meta device holds no plain values to store")
        if tensor.dtype not in _DTYPES:
            raise _Refused(f"a tensor of {tensor.dtype}, which safetensors does not store")
        tensor = tensor.detach()
        try:
            storage = (tensor.device, tensor.untyped_storage().data_ptr())
        except (RuntimeError, NotImplementedError):
            raise _Refused(f"a {_type_name(tensor)} has no plain storage to store") from None
        # The same view of the same memory (tied weights) is stored once.
        identity = (*storage, tensor.storage_offset(), tuple(tensor.shape), tensor.stride(), tensor.dtype)
        index = self._index.get(identity)
        if index is not None:
            return index
        stored = tensor.cpu()
        if storage[1] != 0 and storage in self._storages:
            # Another view of memory already stored: safetensors refuses aliasing, so a copy.
            stored = stored.clone(memory_format=torch.contiguous_format)
        elif not stored.is_contiguous():
            stored = stored.contiguous()
        self._storages.add(storage)
        self._index[identity] = len(self.tensors)
        self.tensors.append(stored)
        return len(self.tensors) - 1


def _key(key: Any) -> str | int:
    if isinstance(key, str):
        return str(key)
    if isinstance(key, int) and not isinstance(key, bool):
        return int(key)
    raise _Refused(f"the key {key!r} is of type {_type_name(key)}; keys are strings or integers")


class _Concatenation(io.RawIOBase):
    """Reads several buffers one after the other without joining them (no copy of the tensors)."""

    def __init__(self, *parts: bytes) -> None:
        super().__init__()
        self._parts = [memoryview(part) for part in parts if part]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._parts:
            return 0
        part = self._parts[0]
        n = min(len(buffer), len(part))
        buffer[:n] = part[:n]
        if n == len(part):
            self._parts.pop(0)
        else:
            self._parts[0] = part[n:]
        return n


# -- decoding ----------------------------------------------------------------------------------


def _decode(plaintext: bytearray, source: str) -> dict[Any, Any]:
    """The state in an authenticated plaintext; anything malformed is InvalidCiphertext."""
    if len(plaintext) < _PREFIX.size:
        raise InvalidCiphertext(source)
    magic, version, skeleton_size = _PREFIX.unpack_from(plaintext)
    tensors_start = _PREFIX.size + skeleton_size
    if (magic != MAGIC or version != FORMAT_VERSION or not 0 < skeleton_size <= MAX_SKELETON_SIZE
            or tensors_start + _MIN_SAFETENSORS > len(plaintext)):
        raise InvalidCiphertext(source)
    skeleton_bytes = bytes(plaintext[_PREFIX.size:tensors_start])
    tensor_bytes = bytes(memoryview(plaintext)[tensors_start:])
    plaintext.clear()  # the tensors' bytes are copied out: give the decrypted buffer back now
    try:
        skeleton = json.loads(skeleton_bytes.decode("utf-8"), parse_constant=_no_constant)
        if not isinstance(skeleton, dict) or set(skeleton) != {"tensors", "state"}:
            raise ValueError("skeleton")
        count = skeleton["tensors"]
        stored = safetensors.torch.load(tensor_bytes)
        del tensor_bytes
        if type(count) is not int or set(stored) != {str(i) for i in range(count)}:
            raise ValueError("tensors")
        decoder = _Decoder([stored[str(i)] for i in range(count)])
        state = decoder.value(skeleton["state"], 0)
        if not isinstance(state, dict) or len(decoder.used) != count:
            raise ValueError("state")
    except (ValueError, KeyError, TypeError, RecursionError, SafetensorError):
        raise InvalidCiphertext(source) from None
    return state


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # the writer spells non-finite floats {"float": …}


class _Decoder:
    """Rebuilds the values of a skeleton (see the module docstring); raises ValueError on anything
    else."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        self.tensors = tensors
        self.used: set[int] = set()

    def value(self, node: Any, depth: int) -> Any:
        if node is None or isinstance(node, bool | int | float | str):
            return node
        if not isinstance(node, dict):
            raise ValueError("value")
        keys = node.keys()
        if keys == {"tensor"}:
            index = node["tensor"]
            if type(index) is not int or not 0 <= index < len(self.tensors):
                raise ValueError("tensor index")
            self.used.add(index)
            return self.tensors[index]
        if keys == {"float"}:
            return _NON_FINITE[node["float"]]
        if depth >= MAX_DEPTH:
            raise ValueError("depth")
        if keys == {"list"} or keys == {"tuple"}:
            kind = "list" if "list" in keys else "tuple"
            items = node[kind]
            if type(items) is not list:
                raise ValueError("items")
            values = [self.value(item, depth + 1) for item in items]
            return values if kind == "list" else tuple(values)
        if keys == {"dict"} or keys == {"odict"} or keys == {"odict", "metadata"}:
            kind = "dict" if "dict" in keys else "odict"
            mapping: dict[Any, Any] = {} if kind == "dict" else OrderedDict()
            pairs = node[kind]
            if type(pairs) is not list:
                raise ValueError("pairs")
            for pair in pairs:
                if type(pair) is not list or len(pair) != 2 or type(pair[0]) not in (str, int) or pair[0] in mapping:
                    raise ValueError("pair")
                mapping[pair[0]] = self.value(pair[1], depth + 1)
            if "metadata" in keys:
                mapping._metadata = self.value(node["metadata"], depth + 1)  # type: ignore[attr-defined]
            return mapping
        raise ValueError("tag")
