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
    "GRAMINE_MANIFEST_KEYS",
    "MANIFEST_FORMAT",
    "Manifest",
    "Mount",
    "TrustedFile",
    "check_manifest_keys",
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
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: Every manifest key Gramine documents (Documentation/manifest-syntax.rst, "Common syntax" and
#: "SGX syntax"; deprecated keys left out), as dotted paths. ``*`` stands for one key of the
#: user's choosing (an environment variable, a key name, an ioctl struct). A table-valued key
#: lists the keys its table may hold under ``path.key``. ``loader.entrypoint`` is a URI string
#: before Gramine 1.8 and a table ``{uri, sha256}`` from 1.8 on; both are documented.
GRAMINE_MANIFEST_KEYS: Final = frozenset({
    "loader.log_level", "loader.log_file",
    "loader.entrypoint", "loader.entrypoint.uri", "loader.entrypoint.sha256",
    "libos.entrypoint", "libos.check_invalid_pointers",
    "loader.argv", "loader.argv_src_file", "loader.insecure__use_cmdline_argv",
    "loader.insecure__use_host_env", "loader.env.*", "loader.env.*.value", "loader.env.*.passthrough",
    "loader.env_src_file", "loader.uid", "loader.gid", "loader.insecure__disable_aslr",
    "sys.enable_extra_runtime_domain_names_conf", "sys.stack.size", "sys.brk.max_size",
    "sys.insecure__allow_eventfd", "sys.enable_sigterm_injection", "sys.disallow_subprocesses",
    "fs.root.type", "fs.root.uri", "fs.mounts", "fs.start_dir", "fs.insecure__keys.*",
    "sgx.debug", "sgx.edmm_enable", "sgx.enclave_size", "sgx.max_threads", "sgx.insecure__rpc_thread_num",
    "sgx.require_avx", "sgx.require_avx512", "sgx.require_mpx", "sgx.require_pkru", "sgx.require_amx",
    "sgx.require_exinfo", "sgx.isvprodid", "sgx.isvsvn",
    "sgx.seal_key.flags_mask", "sgx.seal_key.xfrm_mask", "sgx.seal_key.misc_mask",
    "sgx.allowed_files", "sgx.trusted_files", "sgx.file_check_policy",
    "sgx.ioctl_structs.*", "sgx.allowed_ioctls",
    "sgx.remote_attestation", "sgx.ra_client_linkable", "sgx.ra_client_spid",
    "sgx.preheat_enclave", "sgx.enable_stats",
    "sgx.profile.enable", "sgx.profile.mode", "sgx.profile.with_stack", "sgx.profile.frequency",
    "sgx.vtune_profile",
})
# Keys of the inline tables in documented arrays.
_ARRAY_ENTRY_KEYS: Final = {
    "fs.mounts": frozenset({"type", "path", "uri", "key_name"}),
    "sgx.trusted_files": frozenset({"uri", "sha256"}),
    "sgx.allowed_ioctls": frozenset({"request_code", "struct"}),
}


def _documented(path: tuple[str, ...]) -> str | None:
    """The documented pattern ``path`` matches, if any."""
    for pattern in GRAMINE_MANIFEST_KEYS:
        parts = pattern.split(".")
        if len(parts) == len(path) and all(p in ("*", k) for p, k in zip(parts, path, strict=True)):
            return pattern
    return None


def check_manifest_keys(data: dict[str, Any]) -> None:
    """Refuse a parsed manifest that sets a key Gramine does not document, or any ``insecure__``
    option (whatever its value: ppml never writes one, and a manifest that names one was not
    reviewed with that in mind).

    Raises:
        UsageError: naming the first offending key (dotted, in document order).
    """

    def walk(table: dict[str, Any], prefix: tuple[str, ...]) -> None:
        for key, value in table.items():
            path = (*prefix, key)
            dotted = ".".join(path)
            if "insecure__" in key:
                raise UsageError(f"the manifest sets {dotted}: ppml refuses every insecure__ option")
            pattern = _documented(path)
            if pattern is not None and not isinstance(value, dict):
                entry_keys = _ARRAY_ENTRY_KEYS.get(pattern)
                if entry_keys is not None and isinstance(value, list):
                    for entry in value:
                        extra = sorted(set(entry) - entry_keys) if isinstance(entry, dict) else []
                        if extra:
                            raise UsageError(f"the manifest's {dotted} has an entry with an undocumented "
                                             f"key {extra[0]!r}")
                continue
            if isinstance(value, dict) and any(p.startswith(dotted + ".") for p in _patterns_for(path)):
                walk(value, path)
                continue
            if pattern is not None:  # a documented key given as a table (loader.entrypoint in 1.8)
                walk(value, path)
                continue
            raise UsageError(f"the manifest sets {dotted}, which is not a documented Gramine manifest key")

    walk(data, ())


def _patterns_for(path: tuple[str, ...]) -> list[str]:
    """The documented keys below ``path`` (with ``*`` matching any one key), as concrete prefixes."""
    found = []
    for pattern in GRAMINE_MANIFEST_KEYS:
        parts = pattern.split(".")
        if len(parts) > len(path) and all(p in ("*", k) for p, k in zip(parts, path, strict=False)):
            found.append(".".join((*path, *parts[len(path):])))
    return found


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


_MOUNT_TYPES: Final = ("chroot", "tmpfs")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Mount:
    """An ``fs.mounts`` entry that is not an identity mount of a host directory: a host directory
    seen at another path (Gramine's glibc at ``/lib``) or a ``tmpfs`` (in-enclave scratch space,
    never backed by host files). ``uri`` is empty for ``tmpfs``."""

    path: str
    uri: str = ""
    type: str = "chroot"

    def __post_init__(self) -> None:
        if not os.path.isabs(self.path):
            raise UsageError(f"mount {self.path!r} is not an absolute path")
        if self.type not in _MOUNT_TYPES:
            raise UsageError(f"mount type {self.type!r} is not one ppml writes ({', '.join(_MOUNT_TYPES)})")
        if self.type == "chroot" and not self.uri.startswith("file:/"):
            raise UsageError(f"mount {self.path}: a chroot mount needs a file:/ URI")
        if self.type == "tmpfs" and self.uri:
            raise UsageError(f"mount {self.path}: a tmpfs mount has no URI")

    def to_toml(self) -> str:
        parts = [] if self.type == "chroot" else [f"type = {_toml_string(self.type)}"]
        parts.append(f"path = {_toml_string(self.path)}")
        if self.uri:
            parts.append(f"uri = {_toml_string(self.uri)}")
        return "{ " + ", ".join(parts) + " }"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """A Gramine manifest as ppml builds it. Collections are kept sorted, so equal manifests
    have byte-identical :meth:`to_toml` output (and therefore equal ``mr_enclave``)."""

    libos_entrypoint: str
    loader_entrypoint: str = DEFAULT_LIBOS_URI
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    #: Variables the host passes in (``loader.env.NAME = { passthrough = true }``), listed one by
    #: one: their values are the host's choice, so nothing that decides what runs may be one.
    passthrough_env: tuple[str, ...] = ()
    mounts: tuple[str, ...] = ()
    #: Mounts other than identity mounts, written first and in this order (Gramine mounts in order).
    extra_mounts: tuple[Mount, ...] = ()
    trusted_files: tuple[TrustedFile, ...]
    allowed_files: tuple[str, ...] = ()
    enclave_size: str = "8G"
    max_threads: int = 64
    debug: bool = False
    isv_prod_id: int = 0
    isv_svn: int = 0
    remote_attestation: str = "dcap"
    #: ``sys.enable_extra_runtime_domain_names_conf``: Gramine writes ``/etc/resolv.conf`` and
    #: ``/etc/hosts`` inside the enclave from the host's, so names (a Kubernetes Service, the API
    #: server) resolve. Name resolution is the host's either way; TLS is what authenticates peers.
    runtime_domain_names: bool = False

    def __post_init__(self) -> None:
        trusted = tuple(sorted(self.trusted_files, key=lambda t: t.path))
        object.__setattr__(self, "trusted_files", trusted)
        object.__setattr__(self, "env", tuple(sorted(self.env)))
        object.__setattr__(self, "passthrough_env", tuple(sorted(set(self.passthrough_env))))
        object.__setattr__(self, "extra_mounts", tuple(self.extra_mounts))
        object.__setattr__(self, "mounts", tuple(sorted(set(self.mounts))))
        object.__setattr__(self, "allowed_files", tuple(sorted(set(self.allowed_files))))
        object.__setattr__(self, "argv", tuple(self.argv))
        paths = [t.path for t in self.trusted_files]
        if len(paths) != len(set(paths)):
            raise UsageError("a file is listed twice in sgx.trusted_files")
        keys = [k for k, _ in self.env]
        if len(keys) != len(set(keys)) or any(not k or "=" in k for k in keys):
            raise UsageError("environment variable names must be unique, non-empty and without '='")
        for name in self.passthrough_env:
            if not _ENV_NAME.fullmatch(name):
                raise UsageError(f"passthrough variable {name!r} is not an environment variable name")
            if name in keys:
                raise UsageError(f"{name} is both fixed in the manifest and passed through from the host")
        mount_paths = [m.path for m in self.extra_mounts]
        if len(mount_paths) != len(set(mount_paths)) or set(mount_paths) & set(self.mounts):
            raise UsageError("a path is mounted twice in fs.mounts")
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
            *(f"loader.env.{_toml_key(k)} = {{ passthrough = true }}" for k in self.passthrough_env),
            "fs.mounts = [",
            *(f"  {m.to_toml()}," for m in self.extra_mounts),
            *(
                f"  {{ path = {_toml_string(m)}, uri = {_toml_string('file:' + m)} }},"
                for m in self.mounts
            ),
            "]",
            *(["sys.enable_extra_runtime_domain_names_conf = true"] if self.runtime_domain_names else []),
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
            UsageError: not TOML, a key Gramine does not document or any ``insecure__`` option
                (:func:`check_manifest_keys`), or not a manifest of the shape ppml writes (for
                example one with ``sgx.file_check_policy = "allow_all_but_log"`` or trusted files
                without hashes).
        """
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"not a TOML manifest: {exc}") from None
        check_manifest_keys(data)
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
        mounts, extra_mounts = [], []
        for mount in data.get("fs", {}).get("mounts", []):
            kind = mount.get("type", "chroot")
            if kind == "chroot" and "type" not in mount and mount["uri"] == "file:" + mount["path"]:
                mounts.append(mount["path"])
            else:
                extra_mounts.append(Mount(path=_str(mount["path"]), uri=_str(mount.get("uri", "")), type=_str(kind)))
        env: list[tuple[str, str]] = []
        passthrough: list[str] = []
        for name, value in loader.get("env", {}).items():
            if isinstance(value, dict):
                if value.get("passthrough") is True and set(value) == {"passthrough"}:
                    passthrough.append(name)
                    continue
                if set(value) != {"value"}:
                    raise UsageError(f"loader.env.{name} must be a value or {{ passthrough = true }}")
                value = value["value"]
            env.append((name, _str(value)))
        entrypoint = loader["entrypoint"]
        return cls(
            libos_entrypoint=_str(data["libos"]["entrypoint"]),
            loader_entrypoint=_str(entrypoint["uri"] if isinstance(entrypoint, dict) else entrypoint),
            argv=tuple(_str(a) for a in loader["argv"]),
            env=tuple(env),
            passthrough_env=tuple(passthrough),
            mounts=tuple(mounts),
            extra_mounts=tuple(extra_mounts),
            trusted_files=tuple(trusted),
            allowed_files=tuple(_str(a) for a in sgx.get("allowed_files", [])),
            enclave_size=_str(sgx.get("enclave_size", _GRAMINE_DEFAULT_ENCLAVE_SIZE)),
            max_threads=_int(sgx.get("max_threads", _GRAMINE_DEFAULT_MAX_THREADS)),
            debug=_bool(sgx.get("debug", False)),
            isv_prod_id=_int(sgx.get("isvprodid", 0)),
            isv_svn=_int(sgx.get("isvsvn", 0)),
            remote_attestation=_str(sgx.get("remote_attestation", "none")),
            runtime_domain_names=_bool(data.get("sys", {}).get("enable_extra_runtime_domain_names_conf", False)),
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
    """The measurement-relevant manifest keys, with Gramine's defaults.

    Raises:
        UsageError: not TOML, or a key Gramine does not document, or an ``insecure__`` option
            (:func:`check_manifest_keys`): ppml measures and signs no such manifest.
    """
    try:
        data = tomllib.loads(manifest_bytes.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{where}: not a TOML manifest: {exc}") from None
    try:
        check_manifest_keys(data)
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None
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
