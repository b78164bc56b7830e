"""The encrypted model directory, format version 1: every file of a model in its own ppml
envelope, listed by an encrypted manifest.

Layout (names are fixed: a model's own file names, which reveal its structure, are only inside
the manifest)::

    MODEL/
      manifest.ppml         envelope, associated data "ppml-model/1 manifest <model id>"
      files/000000.ppml     envelope, associated data "ppml-model/1 file <model id> 0"
      files/000001.ppml     …                                              1
      …

``<model id>`` is 32 lowercase hex digits, fresh for every save. The manifest's plaintext is
UTF-8 JSON (at most 16 MiB, at most 100 000 files)::

    {"format": "ppml-model", "version": 1, "model_id": "<model id>",
     "family": "spark-ml" | "xgboost" | "lightgbm" | "sklearn",
     "model_class": "module:QualName", "library_version": "pyspark==4.3.0 …",
     "files": [{"name": "metadata/part-00000", "size": 123, "sha256": "<hex>"}, …]}

File ``i`` of the list is ``files/{i:06d}.ppml``; its plaintext is the library's own file, byte
for byte. What each check stops:

- the envelopes' associated data (part of their authenticated header) binds every file to this
  model and its index, so files swapped within a model or brought from another one fail, and so
  does another model's manifest;
- the manifest's sizes and SHA-256 digests bind the contents once more, and its list is the whole
  directory: a missing or an extra entry fails;
- the directory is staged beside ``MODEL`` and renamed into place whole
  (:func:`ppml.core._files.atomic_directory`), with the manifest written last, so a killed save
  leaves no ``MODEL`` at all and a staging directory that holds no manifest.

Every integrity failure raises :class:`~ppml.errors.InvalidCiphertext` (the ``hint`` says which
entry, never which check); a path without a manifest raises
:class:`~ppml.errors.NotAnEncryptedModel`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import secrets
from pathlib import Path, PurePosixPath
from typing import Any, Final

from ppml.core._files import atomic_directory
from ppml.core.envelope import MAGIC, EnvelopeHeader, decrypt_bytes, encrypt_bytes
from ppml.core.keys import DataKeyProvider
from ppml.errors import InputNotFound, InvalidCiphertext, NotAnEncryptedModel, UsageError
from ppml.ml.family import ModelFiles

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "FileEntry",
    "Manifest",
    "is_encrypted_model",
    "read_model",
    "write_model",
]

FORMAT_VERSION: Final = 1
MANIFEST_NAME: Final = "manifest.ppml"
FILES_DIRECTORY: Final = "files"
MAX_MANIFEST_SIZE: Final = 16 << 20
MAX_FILES: Final = 100_000
MAX_NAME_LENGTH: Final = 1024
_PREFIX: Final = f"ppml-model/{FORMAT_VERSION}"
_MODEL_ID = re.compile(r"[0-9a-f]{32}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FileEntry:
    """One file of a model: its relative name in the library's layout, size and SHA-256."""

    name: str
    size: int
    sha256: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """The decrypted manifest of an encrypted model (see the module docstring)."""

    model_id: str
    family: str
    model_class: str
    library_version: str
    files: tuple[FileEntry, ...]

    def to_json(self) -> bytes:
        return json.dumps({
            "format": "ppml-model", "version": FORMAT_VERSION, "model_id": self.model_id,
            "family": self.family, "model_class": self.model_class,
            "library_version": self.library_version,
            "files": [dataclasses.asdict(entry) for entry in self.files],
        }, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, source: Path) -> Manifest:
        """Parse an authenticated manifest; anything malformed is :class:`InvalidCiphertext`."""
        try:
            raw = json.loads(data)
            if raw["format"] != "ppml-model" or raw["version"] != FORMAT_VERSION:
                raise ValueError("format")
            files = tuple(
                FileEntry(name=_checked_name(f["name"]), size=f["size"], sha256=f["sha256"])
                for f in raw["files"]
            )
            manifest = cls(
                model_id=raw["model_id"], family=raw["family"], model_class=raw["model_class"],
                library_version=raw["library_version"], files=files,
            )
            text_fields = (manifest.family, manifest.model_class, manifest.library_version)
            if not (_MODEL_ID.fullmatch(manifest.model_id) and all(isinstance(t, str) for t in text_fields)
                    and len(files) <= MAX_FILES and len({f.name for f in files}) == len(files)
                    and all(type(f.size) is int and f.size >= 0 and isinstance(f.sha256, str)
                            and _SHA256.fullmatch(f.sha256) for f in files)):
                raise ValueError("fields")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise InvalidCiphertext(source) from None
        return manifest


def _checked_name(name: Any) -> str:
    """A relative POSIX name with no empty, ``.`` or ``..`` part (it becomes a path on load)."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH or "\\" in name or "\0" in name:
        raise ValueError("name")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts) or PurePosixPath(name).is_absolute():
        raise ValueError("name")
    return name


def _manifest_aad(model_id: str) -> bytes:
    return f"{_PREFIX} manifest {model_id}".encode()


def _file_aad(model_id: str, index: int) -> bytes:
    return f"{_PREFIX} file {model_id} {index}".encode()


def _file_path(index: int) -> str:
    return f"{FILES_DIRECTORY}/{index:06d}.ppml"


def write_model(
    path: Path, model: ModelFiles, *, family: str, kms: DataKeyProvider, key_id: str, overwrite: bool = False
) -> Manifest:
    """Encrypt ``model``'s files into the model directory ``path``, which appears whole or not at all.

    Raises:
        OutputExists: ``path`` exists and ``overwrite`` is false.
        UsageError: a file name the format cannot hold (absolute, ``..``, too long) or too many files.
        KeyServiceError: the key service failed or does not know ``key_id``.
    """
    names = sorted(model.files)
    try:
        for name in names:
            _checked_name(name)
    except ValueError:
        raise UsageError(f"model file name {name!r} cannot be stored (absolute, '..', or too long)") from None
    if len(names) > MAX_FILES:
        raise UsageError(f"a model of {len(names)} files is more than the format's {MAX_FILES}")
    model_id = secrets.token_hex(16)
    entries = []
    with atomic_directory(path, overwrite=overwrite) as staging:
        (staging / FILES_DIRECTORY).mkdir()
        for index, name in enumerate(names):
            data = model.files[name]
            _write_new(staging / _file_path(index),
                       encrypt_bytes(data, kms=kms, key_id=key_id, associated_data=_file_aad(model_id, index)))
            entries.append(FileEntry(name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest()))
        manifest = Manifest(model_id=model_id, family=family, model_class=model.model_class,
                            library_version=model.library_version, files=tuple(entries))
        # Last: a staging directory left by a killed save has no manifest, so it never loads.
        _write_new(staging / MANIFEST_NAME, encrypt_bytes(
            manifest.to_json(), kms=kms, key_id=key_id, associated_data=_manifest_aad(model_id)))
    return manifest


def _write_new(path: Path, data: bytes) -> None:
    with open(path, "xb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def is_encrypted_model(path: Path) -> bool:
    """True if ``path`` is a directory whose manifest starts with ppml's magic (nothing verified)."""
    manifest = path / MANIFEST_NAME
    try:
        with open(manifest, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def read_model(path: Path, *, kms: DataKeyProvider) -> tuple[Manifest, ModelFiles]:
    """Decrypt and verify the model directory ``path``; nothing is written anywhere.

    Raises:
        InputNotFound: no such path.
        NotAnEncryptedModel: ``path`` holds no encrypted manifest (a plaintext model, or a
            save that never finished).
        InvalidCiphertext: wrong key (another app's, another key service's), or any file was
            altered, truncated, swapped, removed or added.
    """
    if not path.exists():
        raise InputNotFound(path)
    if not is_encrypted_model(path):
        raise NotAnEncryptedModel(path)
    manifest_path = path / MANIFEST_NAME
    with open(manifest_path, "rb") as f:
        sealed = f.read(MAX_MANIFEST_SIZE + 1)
    if len(sealed) > MAX_MANIFEST_SIZE:
        raise InvalidCiphertext(manifest_path)
    header, _ = EnvelopeHeader.read_from(io.BytesIO(sealed))
    expected_prefix = _manifest_aad("")
    aad = header.associated_data
    model_id = aad[len(expected_prefix):].decode("ascii", "replace")
    if not aad.startswith(expected_prefix) or not _MODEL_ID.fullmatch(model_id):
        raise InvalidCiphertext(manifest_path)
    manifest = Manifest.from_json(_decrypt(sealed, kms, _manifest_aad(model_id), manifest_path), manifest_path)
    if manifest.model_id != model_id:
        raise InvalidCiphertext(manifest_path)
    _check_entries(path, len(manifest.files))
    files = {}
    for index, entry in enumerate(manifest.files):
        file_path = path / _file_path(index)
        with open(file_path, "rb") as f:
            data = _decrypt(f.read(), kms, _file_aad(model_id, index), file_path)
        if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
            raise InvalidCiphertext(file_path)
        files[entry.name] = data
    return manifest, ModelFiles(model_class=manifest.model_class, library_version=manifest.library_version,
                                files=files)


def _decrypt(sealed: bytes, kms: DataKeyProvider, aad: bytes, source: Path) -> bytes:
    try:
        return decrypt_bytes(sealed, kms=kms, associated_data=aad)
    except InvalidCiphertext as exc:
        error = InvalidCiphertext(source)
        error.hint = exc.hint
        raise error from None


def _check_entries(path: Path, count: int) -> None:
    """The directory holds exactly the manifest and ``count`` files: nothing missing, nothing more."""
    expected = {MANIFEST_NAME, FILES_DIRECTORY} | {_file_path(i) for i in range(count)}
    found: set[str] = set()
    for root, directories, names in os.walk(path):
        relative = Path(root).relative_to(path)
        found.update((relative / name).as_posix() for name in directories + names)
    for name, problem in [(n, "missing") for n in sorted(expected - found)] + \
                         [(n, "not part of the model") for n in sorted(found - expected)]:
        error = InvalidCiphertext(path / name)
        error.hint = f"{name} is {problem}: the model directory was altered or is incomplete"
        raise error
