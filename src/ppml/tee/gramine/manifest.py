"""The Gramine manifest as ppml writes it: its model, its TOML, and reading it back.

The TOML is written by a small emitter here (no TOML writer is a dependency); every string is a
TOML basic string with ``"``, ``\\`` and control characters escaped, and the output is read back
with :mod:`tomllib` by :meth:`Manifest.from_toml`, which refuses the manifests ppml never writes
(a file check policy other than ``strict``, argv or environment taken from the host).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Final

from ppml.core._files import require_output_directory
from ppml.errors import AttestationFailed, InputNotFound, NotAFile, OutputExists, UsageError

__all__ = [
    "DEFAULT_LIBOS_URI",
    "MANIFEST_FORMAT",
    "Manifest",
    "TrustedFile",
    "manifest_settings",
    "parse_size",
    "read_manifest_bytes",
]

#: Where Gramine's Ubuntu/Debian packages install the LibOS (what ``{{ gramine.libos }}`` renders
#: to there). Pass ``loader_entrypoint=`` for another installation.
DEFAULT_LIBOS_URI: Final = "file:/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so"
#: Written as the first comment line of every manifest ppml builds.
MANIFEST_FORMAT: Final = "ppml-manifest/1"

# Gramine's defaults when the manifest does not say (Documentation/manifest-syntax.rst).
_GRAMINE_DEFAULT_ENCLAVE_SIZE: Final = "256M"
_GRAMINE_DEFAULT_MAX_THREADS: Final = 4
_HASH_CHUNK: Final = 1 << 20
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def parse_size(value: str) -> int:
    """A Gramine size (``"8G"``, ``"512M"``, ``"64K"``, ``"0x1000"``) in bytes.

    Raises:
        UsageError: not a size.
    """
    text = value.strip()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    number = text[:-1] if scale != 1 else text
    try:
        size = int(number, 0)
    except ValueError:
        raise UsageError(f"not a size: {value!r} (expected e.g. 8G, 512M, 64K)") from None
    if size <= 0:
        raise UsageError(f"not a size: {value!r} (must be positive)")
    return size * scale


def _check_enclave_size(value: str) -> int:
    size = parse_size(value)
    if size & (size - 1):
        raise UsageError(f"enclave size {value} is not a power of two (SGX requires one)")
    return size


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _toml_string(value: str) -> str:
    """A TOML basic string: escapes ``"``, ``\\`` and every control character (TOML 1.0 §String)."""
    out = ['"']
    for char in value:
        code = ord(char)
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char in "\b\t\n\f\r":
            out.append({"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:
            # A lone surrogate: a file name that was not valid UTF-8. TOML cannot carry it.
            raise UsageError(f"{value!r} is not valid UTF-8 and cannot be written to a manifest")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TrustedFile:
    """One ``sgx.trusted_files`` entry: an absolute host path and the SHA-256 of its content."""

    path: str
    sha256: str

    def __post_init__(self) -> None:
        if not os.path.isabs(self.path):
            raise UsageError(f"trusted file {self.path!r} is not an absolute path")
        if not _SHA256_HEX.fullmatch(self.sha256):
            raise UsageError(f"trusted file {self.path}: sha256 must be 64 lower-case hex digits")

    @property
    def uri(self) -> str:
        return "file:" + self.path

    @classmethod
    def of(cls, path: Path) -> TrustedFile:
        """Hash ``path`` now."""
        return cls(path=str(path), sha256=_sha256_file(path))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """A Gramine manifest as ppml builds it. Collections are kept sorted, so equal manifests
    have byte-identical :meth:`to_toml` output (and therefore equal ``mr_enclave``)."""

    libos_entrypoint: str
    loader_entrypoint: str = DEFAULT_LIBOS_URI
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    mounts: tuple[str, ...] = ()
    trusted_files: tuple[TrustedFile, ...]
    allowed_files: tuple[str, ...] = ()
    enclave_size: str = "8G"
    max_threads: int = 64
    debug: bool = False
    isv_prod_id: int = 0
    isv_svn: int = 0
    remote_attestation: str = "dcap"

    def __post_init__(self) -> None:
        trusted = tuple(sorted(self.trusted_files, key=lambda t: t.path))
        object.__setattr__(self, "trusted_files", trusted)
        object.__setattr__(self, "env", tuple(sorted(self.env)))
        object.__setattr__(self, "mounts", tuple(sorted(set(self.mounts))))
        object.__setattr__(self, "allowed_files", tuple(sorted(set(self.allowed_files))))
        object.__setattr__(self, "argv", tuple(self.argv))
        paths = [t.path for t in self.trusted_files]
        if len(paths) != len(set(paths)):
            raise UsageError("a file is listed twice in sgx.trusted_files")
        keys = [k for k, _ in self.env]
        if len(keys) != len(set(keys)) or any(not k or "=" in k for k in keys):
            raise UsageError("environment variable names must be unique, non-empty and without '='")
        _check_enclave_size(self.enclave_size)
        if not 1 <= self.max_threads <= 1 << 16:
            raise UsageError("max_threads must be between 1 and 65536")
        for name in ("isv_prod_id", "isv_svn"):
            if not 0 <= getattr(self, name) <= 0xFFFF:
                raise UsageError(f"{name} must be between 0 and 65535")
        if not self.argv:
            raise UsageError("loader.argv must not be empty")
        for mount in self.mounts:
            if not os.path.isabs(mount):
                raise UsageError(f"mount {mount!r} is not an absolute path")

    def to_toml(self) -> str:
        """The manifest as TOML, deterministic: same manifest, same bytes."""
        lines = [
            f"# Gramine manifest built by ppml ({MANIFEST_FORMAT}). Do not edit: the sgx.trusted_files",
            "# hashes and this file's bytes are what mr_enclave commits to.",
            f"libos.entrypoint = {_toml_string(self.libos_entrypoint)}",
            f"loader.entrypoint.uri = {_toml_string(self.loader_entrypoint)}",
            'loader.log_level = "error"',
            "loader.argv = [",
            *(f"  {_toml_string(arg)}," for arg in self.argv),
            "]",
            *(f"loader.env.{_toml_key(k)} = {_toml_string(v)}" for k, v in self.env),
            "fs.mounts = [",
            *(
                f"  {{ path = {_toml_string(m)}, uri = {_toml_string('file:' + m)} }},"
                for m in self.mounts
            ),
            "]",
            f"sgx.debug = {'true' if self.debug else 'false'}",
            "sgx.edmm_enable = false",
            f"sgx.enclave_size = {_toml_string(self.enclave_size)}",
            f"sgx.max_threads = {self.max_threads}",
            f"sgx.isvprodid = {self.isv_prod_id}",
            f"sgx.isvsvn = {self.isv_svn}",
            f"sgx.remote_attestation = {_toml_string(self.remote_attestation)}",
            'sgx.file_check_policy = "strict"',
            "sgx.allowed_files = [",
            *(f"  {_toml_string(a)}," for a in self.allowed_files),
            "]",
            "sgx.trusted_files = [",
            *(
                f"  {{ uri = {_toml_string(t.uri)}, sha256 = {_toml_string(t.sha256)} }},"
                for t in self.trusted_files
            ),
            "]",
        ]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, text: str) -> Manifest:
        """Read back a manifest written by :meth:`to_toml`.

        Raises:
            UsageError: not TOML, or not a manifest of the shape ppml writes (for example one with
                ``sgx.file_check_policy = "allow_all_but_log"`` or trusted files without hashes).
        """
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"not a TOML manifest: {exc}") from None
        try:
            return cls._from_dict(data)
        except (KeyError, TypeError, AttributeError) as exc:
            raise UsageError(f"not a manifest built by ppml (missing or malformed {exc})") from None

    @classmethod
    def _from_dict(cls, data: dict[str, Any]) -> Manifest:
        loader, sgx = data["loader"], data["sgx"]
        if sgx.get("file_check_policy", "strict") != "strict":
            raise UsageError("the manifest's sgx.file_check_policy is not \"strict\"")
        for insecure in ("insecure__use_cmdline_argv", "insecure__use_host_env", "argv_src_file",
                         "env_src_file"):
            if insecure in loader:
                raise UsageError(
                    f"the manifest sets loader.{insecure}: the host could change what runs"
                )
        trusted = []
        for entry in sgx["trusted_files"]:
            uri, digest = entry["uri"], entry["sha256"]
            if not isinstance(uri, str) or not uri.startswith("file:"):
                raise UsageError(f"trusted file URI {uri!r} is not a file: URI")
            trusted.append(TrustedFile(path=uri[len("file:"):], sha256=digest))
        mounts = []
        for mount in data.get("fs", {}).get("mounts", []):
            if mount["uri"] != "file:" + mount["path"]:
                raise UsageError(f"mount {mount['path']!r} is not an identity mount")
            mounts.append(mount["path"])
        entrypoint = loader["entrypoint"]
        return cls(
            libos_entrypoint=_str(data["libos"]["entrypoint"]),
            loader_entrypoint=_str(entrypoint["uri"] if isinstance(entrypoint, dict) else entrypoint),
            argv=tuple(_str(a) for a in loader["argv"]),
            env=tuple((k, _str(v)) for k, v in loader.get("env", {}).items()),
            mounts=tuple(mounts),
            trusted_files=tuple(trusted),
            allowed_files=tuple(_str(a) for a in sgx.get("allowed_files", [])),
            enclave_size=_str(sgx.get("enclave_size", _GRAMINE_DEFAULT_ENCLAVE_SIZE)),
            max_threads=_int(sgx.get("max_threads", _GRAMINE_DEFAULT_MAX_THREADS)),
            debug=_bool(sgx.get("debug", False)),
            isv_prod_id=_int(sgx.get("isvprodid", 0)),
            isv_svn=_int(sgx.get("isvsvn", 0)),
            remote_attestation=_str(sgx.get("remote_attestation", "none")),
        )

    @classmethod
    def load(cls, path: Path | str) -> Manifest:
        """Read a manifest file written by :meth:`write`."""
        path = Path(path)
        try:
            text = read_manifest_bytes(path).decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{path}: a manifest is UTF-8 text") from None
        return cls.from_toml(text)

    def write(self, path: Path | str, *, overwrite: bool = False) -> None:
        """Write :meth:`to_toml` to ``path`` (atomically: a temporary file renamed into place).

        Raises:
            OutputExists: ``path`` exists and ``overwrite`` is false.
        """
        _write_atomically(Path(path), self.to_toml().encode("utf-8"), overwrite=overwrite)

    def verify_trusted_files(self) -> None:
        """Re-hash every trusted file, as Gramine checks them when the enclave opens them.

        This is what the simulated loader runs before it starts the application.

        Raises:
            AttestationFailed: naming the first file (in manifest order) that is missing or whose
                content no longer matches its hash.
        """
        for trusted in self.trusted_files:
            try:
                actual = _sha256_file(Path(trusted.path))
            except OSError as exc:
                raise AttestationFailed(
                    f"trusted file {trusted.path} cannot be read ({exc.strerror or exc})"
                ) from None
            if actual != trusted.sha256:
                raise AttestationFailed(
                    f"trusted file {trusted.path} changed since the manifest was built "
                    f"(sha256 {actual}, manifest says {trusted.sha256})"
                )


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def _write_atomically(path: Path, data: bytes, *, overwrite: bool, mode: int = 0o644) -> None:
    if path.is_dir():
        raise NotAFile(path, "is a directory, expected a file path for the output")
    if path.exists() and not overwrite:
        raise OutputExists(path)
    parent = require_output_directory(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def read_manifest_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputNotFound(path) from None
    except IsADirectoryError:
        raise NotAFile(path) from None


@dataclasses.dataclass(frozen=True, slots=True)
class _Settings:
    enclave_size: int
    max_threads: int
    debug: bool
    isv_prod_id: int
    isv_svn: int


def manifest_settings(manifest_bytes: bytes, where: Path) -> _Settings:
    """The measurement-relevant manifest keys, with Gramine's defaults."""
    try:
        data = tomllib.loads(manifest_bytes.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{where}: not a TOML manifest: {exc}") from None
    sgx = data.get("sgx", {})
    try:
        return _Settings(
            enclave_size=_check_enclave_size(
                _str(sgx.get("enclave_size", _GRAMINE_DEFAULT_ENCLAVE_SIZE))
            ),
            max_threads=_int(sgx.get("max_threads", _GRAMINE_DEFAULT_MAX_THREADS)),
            debug=_bool(sgx.get("debug", False)),
            isv_prod_id=_int(sgx.get("isvprodid", 0)),
            isv_svn=_int(sgx.get("isvsvn", 0)),
        )
    except TypeError as exc:
        raise UsageError(f"{where}: bad sgx settings: {exc}") from None
