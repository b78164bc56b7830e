"""Where files live: local paths and ``s3://bucket/key`` objects, behind one :class:`Storage`.

:func:`storage_for` picks the implementation once, from the path's scheme: :class:`LocalStorage`
(the envelope reader keeps its ``os.preadv`` path) or :class:`S3Storage`, which talks to S3 or any
S3-compatible service through PyArrow's ``S3FileSystem``: ranged GETs for random access,
multipart uploads for writes, CopyObject to publish.

Visibility. An S3 upload becomes an object only when it completes, but PyArrow completes an
upload whenever its stream is closed or garbage-collected, even after a failure. So nothing is
ever uploaded under its final key: :meth:`Storage.atomic_output` writes a temporary object beside
the destination (``.NAME.HEX.partial``) and copies it into place on commit; a staging area
(:func:`staged_directory`, a Spark job's ``_temporary/JOB``) is published by copying each object
(:func:`publish`). Readers skip names starting with ``.`` or ``_``, as Spark's file sources do.
A single CopyObject is limited to 5 GB on AWS S3: larger outputs need a multipart copy, which
PyArrow does not do.

Settings (:class:`S3Settings`) come from the standard AWS environment (``AWS_ENDPOINT_URL_S3``,
``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_DEFAULT_REGION``, the SDK's credential chain:
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, ``AWS_PROFILE``,
``~/.aws/credentials``, instance roles) or, for the endpoint, region and a credentials *file*,
from options. A secret itself is never an option or an argument.
"""

from __future__ import annotations

import abc
import configparser
import contextlib
import dataclasses
import functools
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Final, Literal, Protocol

from ppml.core._files import AtomicOutput, AtomicSink, atomic_directory, open_input
from ppml.core.random_access import LocalInput, RandomAccessInput
from ppml.errors import (
    InputError,
    InputNotFound,
    NotAFile,
    OutputExists,
    ServiceUnavailable,
    UsageError,
)

__all__ = [
    "S3_SCHEME",
    "FileEntry",
    "LocalStorage",
    "S3Settings",
    "S3Storage",
    "Storage",
    "is_connection_failure",
    "is_object_url",
    "publish",
    "staged_directory",
    "storage_for",
]

S3_SCHEME: Final = "s3://"
_OPTION_PREFIX: Final = "s3."


def is_object_url(path: str | Path) -> bool:
    """True for ``s3://`` URLs (anything else is a local path)."""
    return str(path).startswith(S3_SCHEME)


def is_connection_failure(error: OSError) -> bool:
    """Whether PyArrow's ``error`` says the object store could not be reached (as opposed to a
    refused request or a malformed file)."""
    message = str(error)
    return "NETWORK_CONNECTION" in message or "curlCode" in message


def _is_hidden(name: str) -> bool:
    """Hadoop's convention: names starting with '.' or '_' are metadata, not data."""
    return name.startswith((".", "_"))


@dataclasses.dataclass(frozen=True, slots=True)
class FileEntry:
    """A data file: its full path or URL, its path relative to the listed root, its size."""

    path: str
    relative: str
    size: int


class Storage(Protocol):
    """Files under one kind of path. Paths are strings: local paths or ``s3://`` URLs."""

    def kind(self, path: str) -> Literal["file", "directory"] | None:
        """What ``path`` is; None if nothing is there (an S3 prefix with no object)."""
        ...

    def list_files(self, path: str) -> list[FileEntry]:
        """``path`` itself if it is a file; else every data file below it, sorted, skipping
        names (files or directories) that start with ``.`` or ``_``.

        Raises:
            InputNotFound: nothing is at ``path``.
        """
        ...

    def open_input(self, path: str) -> BinaryIO:
        """A sequential reader (with ``readinto``)."""
        ...

    def open_random_access(self, path: str) -> RandomAccessInput: ...

    def open_arrow_file(self, path: str) -> Any:
        """A ``pyarrow.NativeFile`` with random access (for Parquet)."""
        ...

    def atomic_output(self, path: str, *, overwrite: bool) -> AtomicSink:
        """An output that appears at ``path`` only on commit.

        Raises:
            OutputExists: ``path`` exists and ``overwrite`` is false.
            NotAFile: ``path`` is a directory.
        """
        ...

    def staged_output(self, path: str) -> AtomicSink:
        """A new file inside a staging area: written in place (commit only closes it);
        discarding removes it. Fails if ``path``'s local directory is gone."""
        ...

    def move(self, src: str, dst: str) -> None: ...

    def delete(self, path: str) -> None:
        """Remove one file; nothing if it is gone."""
        ...

    def delete_tree(self, path: str) -> None:
        """Remove a directory (every object under a prefix); nothing if it is gone."""
        ...

    def remove_if_empty(self, path: str) -> None:
        """Remove the directory ``path`` if it holds no file (on S3: no object but directory
        markers); nothing otherwise."""
        ...

    def make_dirs(self, path: str) -> None: ...

    def write_bytes(self, path: str, data: bytes) -> None: ...

    def join(self, base: str, *names: str) -> str: ...


# -- local ----------------------------------------------------------------------------------------


class _StagedFile(abc.ABC):
    """A file written in place inside a staging area: commit closes it, discard closes and
    removes it (closing may fail the way the write did: that must not keep the file)."""

    file: BinaryIO

    def commit(self) -> None:
        self.file.close()

    def discard(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass
        finally:
            self._remove()

    @abc.abstractmethod
    def _remove(self) -> None:
        """Delete the staged file (each storage knows how)."""


class _LocalStaged(_StagedFile):
    """Created exclusive ("x"), so a removed directory (an aborted job) or a clash makes no
    stray file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "xb")

    def _remove(self) -> None:
        self.path.unlink(missing_ok=True)


class LocalStorage:
    """The local filesystem: plain files, ``os.replace`` to publish."""

    def kind(self, path: str) -> Literal["file", "directory"] | None:
        where = Path(path)
        if where.is_file():
            return "file"
        return "directory" if where.is_dir() else None

    def list_files(self, path: str) -> list[FileEntry]:
        root = Path(path)
        if root.is_file():
            return [FileEntry(str(root), root.name, root.stat().st_size)]
        if not root.is_dir():
            raise InputNotFound(root)
        found: list[Path] = []
        for directory, subdirs, files in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if not _is_hidden(d))
            base = Path(directory)
            found.extend(base / name for name in files if not _is_hidden(name))
        return [
            FileEntry(str(file), file.relative_to(root).as_posix(), file.stat().st_size)
            for file in sorted(found) if file.is_file()
        ]

    def open_input(self, path: str) -> BinaryIO:
        return open_input(Path(path))

    def open_random_access(self, path: str) -> RandomAccessInput:
        return LocalInput(path)

    def open_arrow_file(self, path: str) -> Any:
        import pyarrow as pa

        try:
            return pa.OSFile(path)
        except FileNotFoundError:
            raise InputNotFound(path) from None

    def atomic_output(self, path: str, *, overwrite: bool) -> AtomicSink:
        return AtomicOutput(Path(path), overwrite=overwrite)

    def staged_output(self, path: str) -> AtomicSink:
        return _LocalStaged(Path(path))

    def move(self, src: str, dst: str) -> None:
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)

    def delete(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)

    def delete_tree(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def remove_if_empty(self, path: str) -> None:
        with contextlib.suppress(OSError):
            Path(path).rmdir()

    def make_dirs(self, path: str) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)

    def write_bytes(self, path: str, data: bytes) -> None:
        Path(path).write_bytes(data)

    def join(self, base: str, *names: str) -> str:
        return str(Path(base).joinpath(*names))


# -- S3 -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class S3Settings:
    """Where and as whom to reach S3, beyond what the AWS environment says.

    ``endpoint`` (``http(s)://host:port``, for S3-compatible services) and ``region`` override
    ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` and ``AWS_REGION``/``AWS_DEFAULT_REGION``.
    ``credentials_file`` is an AWS shared-credentials file (INI: ``aws_access_key_id``,
    ``aws_secret_access_key``, optional ``aws_session_token``) read in the process that connects,
    section ``profile`` (else ``AWS_PROFILE``, else ``default``); without it the AWS SDK's own
    credential chain applies. Only the file's path travels (in a Spark plan, say), never a secret.
    """

    endpoint: str | None = None
    region: str | None = None
    credentials_file: str | None = None
    profile: str | None = None

    def __post_init__(self) -> None:
        if self.endpoint is not None and not self.endpoint.startswith(("http://", "https://")):
            raise UsageError(f"the S3 endpoint must be an http:// or https:// URL, got {self.endpoint!r}")

    @classmethod
    def from_options(cls, options: Mapping[str, str]) -> S3Settings:
        """From options ``s3.endpoint``, ``s3.region``, ``s3.credentialsFile``, ``s3.profile``
        (names without case). Secrets are refused: they would show in plans and logs.

        Raises:
            UsageError: an unknown ``s3.`` option, or one that carries a secret.
            InputNotFound: the credentials file does not exist.
        """
        lowered = {key.lower(): value for key, value in options.items()}
        known = {"s3.endpoint", "s3.region", "s3.credentialsfile", "s3.profile"}
        for key in lowered:
            if key.startswith(_OPTION_PREFIX) and key not in known:
                raise UsageError(
                    f"unknown option {key!r}: the S3 options are s3.endpoint, s3.region, "
                    "s3.credentialsFile (a file, never the secret itself) and s3.profile"
                )
        credentials_file = lowered.get("s3.credentialsfile")
        if credentials_file is not None and not Path(credentials_file).is_file():
            raise InputNotFound(credentials_file)
        return cls(endpoint=lowered.get("s3.endpoint"), region=lowered.get("s3.region"),
                   credentials_file=credentials_file, profile=lowered.get("s3.profile"))

    def effective_endpoint(self) -> str | None:
        return (self.endpoint or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL") or None)

    def effective_region(self) -> str | None:
        return self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None

    def credentials(self) -> dict[str, str]:
        """Keyword arguments for ``S3FileSystem`` from the credentials file (none without one)."""
        if self.credentials_file is None:
            return {}
        parser = configparser.ConfigParser()
        try:
            with open(self.credentials_file, encoding="utf-8") as f:
                parser.read_file(f)
        except FileNotFoundError:
            raise InputNotFound(self.credentials_file) from None
        except (OSError, configparser.Error) as exc:
            raise InputError(self.credentials_file, f"not an AWS credentials file ({type(exc).__name__})") from None
        profile = self.profile or os.environ.get("AWS_PROFILE") or "default"
        if not parser.has_section(profile):
            raise InputError(self.credentials_file, f"has no profile [{profile}]")
        section = parser[profile]
        try:
            found = {"access_key": section["aws_access_key_id"], "secret_key": section["aws_secret_access_key"]}
        except KeyError:
            raise InputError(self.credentials_file,
                             f"profile [{profile}] needs aws_access_key_id and aws_secret_access_key") from None
        if section.get("aws_session_token"):
            found["session_token"] = section["aws_session_token"]
        return found


@functools.lru_cache(maxsize=16)
def _s3_filesystem(settings: S3Settings, endpoint: str | None, region: str | None) -> Any:
    """One PyArrow S3 filesystem per settings in this process (its connections are reused)."""
    try:
        import pyarrow.fs as pafs
    except ImportError:
        raise UsageError("s3:// paths need PyArrow: pip install ppml[s3]") from None
    arguments: dict[str, Any] = dict(settings.credentials())
    if endpoint is not None:
        arguments["endpoint_override"] = endpoint
    if region is not None:
        arguments["region"] = region
    return pafs.S3FileSystem(
        connect_timeout=10, request_timeout=60,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=3), **arguments,
    )


class _S3Input:
    """An S3 object read with ranged GETs (``read_at``)."""

    def __init__(self, storage: S3Storage, url: str, file: Any) -> None:
        self._storage = storage
        self.name = url
        self._file = file

    def size(self) -> int:
        with self._storage.mapped(self.name):
            return int(self._file.size())

    def read_into(self, buffer: memoryview, offset: int) -> int:
        with self._storage.mapped(self.name):
            data = self._file.read_at(len(buffer), offset)
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._file.close()


class _S3Staged(_StagedFile):
    """An upload to its final key (inside a staging prefix): visible once closed. Discarding
    closes it, which completes the upload (PyArrow cannot abort one), then deletes the object."""

    def __init__(self, storage: S3Storage, url: str) -> None:
        self._storage = storage
        self.url = url
        with storage.mapped(url):
            self.file = storage.filesystem().open_output_stream(storage.key(url))

    def commit(self) -> None:
        with self._storage.mapped(self.url):
            self.file.close()

    def _remove(self) -> None:
        with contextlib.suppress(OSError, InputError, ServiceUnavailable):
            self._storage.delete(self.url)


class _S3AtomicOutput:
    """A temporary object beside ``url`` (``.NAME.HEX.partial``) copied to ``url`` on commit."""

    def __init__(self, storage: S3Storage, url: str) -> None:
        parent, _, name = url.rpartition("/")
        self._storage = storage
        self.url = url
        self._staged = _S3Staged(storage, f"{parent}/.{name}.{uuid.uuid4().hex}.partial")
        self.file = self._staged.file

    def commit(self) -> None:
        try:
            self._staged.commit()
            self._storage.move(self._staged.url, self.url)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        self._staged.discard()


class S3Storage:
    """Objects in S3 (or an S3-compatible service) through PyArrow's ``S3FileSystem``."""

    def __init__(self, settings: S3Settings | None = None) -> None:
        self.settings = settings or S3Settings()

    def filesystem(self) -> Any:
        return _s3_filesystem(self.settings, self.settings.effective_endpoint(), self.settings.effective_region())

    @staticmethod
    def key(url: str) -> str:
        """``s3://bucket/a/b`` as PyArrow names it: ``bucket/a/b``."""
        if not is_object_url(url):
            raise UsageError(f"not an s3:// URL: {url!r}")
        key = url[len(S3_SCHEME):].rstrip("/")
        if not key:
            raise UsageError(f"{url!r} names no bucket")
        return key

    @contextlib.contextmanager
    def mapped(self, url: str) -> Iterator[None]:
        """PyArrow's errors for ``url`` as ppml's: missing → InputNotFound, no connection →
        ServiceUnavailable, anything else the service refused → InputError."""
        try:
            yield
        except FileNotFoundError:
            raise InputNotFound(url) from None
        except OSError as exc:
            reason = str(exc).split("; Details:")[0].strip()
            if is_connection_failure(exc):
                endpoint = self.settings.effective_endpoint() or "AWS S3"
                error = ServiceUnavailable(f"object storage at {endpoint}", reason)
                error.hint = "check s3.endpoint or AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, and that the service runs"
                raise error from None
            raise InputError(url, f"object storage refused the request: {reason}") from None

    def kind(self, path: str) -> Literal["file", "directory"] | None:
        import pyarrow.fs as pafs

        with self.mapped(path):
            info = self.filesystem().get_file_info(self.key(path))
        if info.type == pafs.FileType.File:
            return "file"
        return "directory" if info.type == pafs.FileType.Directory else None

    def list_files(self, path: str) -> list[FileEntry]:
        import pyarrow.fs as pafs

        root = self.key(path)
        with self.mapped(path):
            info = self.filesystem().get_file_info(root)
            if info.type == pafs.FileType.File:
                return [FileEntry(path, root.rpartition("/")[2], int(info.size))]
            if info.type != pafs.FileType.Directory:
                raise InputNotFound(path)
            found = self.filesystem().get_file_info(pafs.FileSelector(root, recursive=True))
        entries = []
        for item in found:
            relative = item.path[len(root) + 1:]
            if item.type != pafs.FileType.File or any(_is_hidden(part) for part in relative.split("/")):
                continue
            entries.append(FileEntry(S3_SCHEME + item.path, relative, int(item.size)))
        return sorted(entries, key=lambda entry: entry.relative.split("/"))

    def open_input(self, path: str) -> BinaryIO:
        with self.mapped(path):
            stream: BinaryIO = self.filesystem().open_input_stream(self.key(path))
        return stream

    def open_random_access(self, path: str) -> RandomAccessInput:
        return _S3Input(self, path, self.open_arrow_file(path))

    def open_arrow_file(self, path: str) -> Any:
        with self.mapped(path):
            return self.filesystem().open_input_file(self.key(path))

    def atomic_output(self, path: str, *, overwrite: bool) -> AtomicSink:
        kind = self.kind(path)
        if kind == "directory":
            raise NotAFile(path, "is a prefix with objects, expected an object key for the output")
        if kind == "file" and not overwrite:
            raise OutputExists(path)
        return _S3AtomicOutput(self, path)

    def staged_output(self, path: str) -> AtomicSink:
        return _S3Staged(self, path)

    def move(self, src: str, dst: str) -> None:
        with self.mapped(src):
            self.filesystem().copy_file(self.key(src), self.key(dst))
        self.delete(src)

    def delete(self, path: str) -> None:
        with contextlib.suppress(InputNotFound), self.mapped(path):
            self.filesystem().delete_file(self.key(path))

    def delete_tree(self, path: str) -> None:
        key = self.key(path)
        if "/" not in key:
            raise UsageError(f"refusing to delete a whole bucket: {path}")
        with contextlib.suppress(InputNotFound), self.mapped(path):
            self.filesystem().delete_dir(key)

    def remove_if_empty(self, path: str) -> None:
        # PyArrow leaves a directory marker (an empty "PREFIX/" object) for the parent of
        # whatever it deletes; deleting a prefix that holds only markers removes them.
        try:
            if self.kind(path) == "directory" and not self.list_files(path):
                self.delete_tree(path)
        except InputNotFound:
            pass

    def make_dirs(self, path: str) -> None:
        """Nothing: S3 has no directories (an object's key makes its prefix)."""

    def write_bytes(self, path: str, data: bytes) -> None:
        output = self.staged_output(path)
        output.file.write(data)
        output.commit()

    def join(self, base: str, *names: str) -> str:
        return "/".join([base.rstrip("/"), *names])


def storage_for(path: str | Path, settings: S3Settings | None = None) -> Storage:
    """The storage that holds ``path``: S3 for ``s3://`` URLs (with ``settings``), else local."""
    if is_object_url(path):
        return S3Storage(settings)
    if str(path).startswith(("s3a://", "s3n://")):
        raise UsageError(f"{path!r}: ppml's Python paths read s3:// URLs; s3a:// is the JVM's (Hadoop's) scheme")
    return LocalStorage()


def publish(storage: Storage, staging: str, target: str, moves: Sequence[tuple[str, str]], *,
            replace: bool) -> None:
    """Move each staged file (``moves``: its name relative to ``staging``, then its name
    relative to ``target``) into ``target``; with ``replace``, then remove the data files of
    ``target`` that were not among them (an overwrite). Readers see the new files appear one by
    one (S3 has no rename of a prefix), never a partial file."""
    previous = [entry.path for entry in storage.list_files(target)] if replace and storage.kind(target) else []
    published = set()
    for staged, name in moves:
        destination = storage.join(target, name)
        storage.move(storage.join(staging, staged), destination)
        published.add(destination)
    for old in previous:
        if old not in published:
            storage.delete(old)


@contextlib.contextmanager
def staged_directory(storage: Storage, target: str, *, overwrite: bool) -> Iterator[Callable[[str], AtomicSink]]:
    """Write a directory's files that appear at ``target`` only if the block succeeds: yields a
    function that makes the output for a relative name. Locally the whole directory is renamed
    into place (:func:`~ppml.core._files.atomic_directory`); on S3 files are staged under
    ``target/_temporary/HEX/`` and published (:func:`publish`) at the end, or deleted on failure.

    Raises:
        OutputExists: ``target`` holds data and ``overwrite`` is false.
    """
    if isinstance(storage, LocalStorage):
        with atomic_directory(Path(target), overwrite=overwrite) as directory:
            def local_output(relative: str) -> AtomicSink:
                path = directory / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                return AtomicOutput(path, overwrite=False)

            yield local_output
        return
    kind = storage.kind(target)
    if kind == "file":
        raise NotAFile(target, "is an object, expected a prefix for a directory's files")
    if kind == "directory" and not overwrite and storage.list_files(target):
        raise OutputExists(target)
    staging = storage.join(target, "_temporary", uuid.uuid4().hex)
    names: list[str] = []

    def staged(relative: str) -> AtomicSink:
        names.append(relative)
        return storage.staged_output(storage.join(staging, relative))

    try:
        yield staged
        publish(storage, staging, target, [(name, name) for name in names], replace=overwrite)
    finally:
        storage.delete_tree(staging)
        storage.remove_if_empty(storage.join(target, "_temporary"))
        storage.remove_if_empty(target)
