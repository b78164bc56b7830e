"""Gramine manifests for ppml applications, and their measurement and signature.

:func:`build_manifest` lists every file the application loads (the Python interpreter, the
``sys.path`` directories, the application, Spark's jars) as ``sgx.trusted_files`` with their
SHA-256, so the manifest, and through it ``mr_enclave``, commits to all of them. The manifest is
strict on purpose:

* ``sgx.file_check_policy = "strict"`` and no ``sgx.allowed_files`` unless listed explicitly;
* ``loader.argv`` and ``loader.env.*`` are fixed in the manifest (never
  ``loader.insecure__use_cmdline_argv``, ``loader.argv_src_file`` or
  ``loader.insecure__use_host_env``): the host cannot change what runs;
* ``sgx.debug = false`` unless asked for (a debug enclave's memory is readable by the host).

:func:`measure` returns ``mr_enclave``/``mr_signer``: from ``gramine-sgx-sign`` when it is on the
``PATH``, otherwise from ppml's documented simulated measurement
(:func:`ppml.core.measurement.measure_manifest`). :func:`sign` writes the matching SIGSTRUCT.

The manifest TOML is written by a small emitter here (no TOML writer is a dependency); every
string is a TOML basic string with ``"``, ``\\`` and control characters escaped, and the output is
read back with :mod:`tomllib` by :meth:`Manifest.from_toml`.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

from ppml.core._files import require_output_directory
from ppml.core.measurement import (
    SIGSTRUCT_SIZE,
    Sigstruct,
    enclave_attributes,
    load_enclave_key,
    measure_manifest,
    mr_signer,
    sign_sigstruct,
    verify_sigstruct,
)
from ppml.errors import (
    AttestationFailed,
    InputNotFound,
    NotAFile,
    OutputExists,
    UnsafeWarning,
    UsageError,
)

__all__ = [
    "DEFAULT_LIBOS_URI",
    "GRAMINE_SGX_SIGN",
    "MANIFEST_FORMAT",
    "Manifest",
    "Measurement",
    "SOURCE_GRAMINE",
    "SOURCE_SIMULATED",
    "TrustedFile",
    "build_manifest",
    "default_python_paths",
    "find_gramine_sgx_sign",
    "measure",
    "parse_size",
    "sign",
]

#: Where Gramine's Ubuntu/Debian packages install the LibOS (what ``{{ gramine.libos }}`` renders
#: to there). Pass ``loader_entrypoint=`` for another installation.
DEFAULT_LIBOS_URI: Final = "file:/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so"
GRAMINE_SGX_SIGN: Final = "gramine-sgx-sign"
SOURCE_GRAMINE: Final = "gramine-sgx-sign"
SOURCE_SIMULATED: Final = "ppml-simulated-measurement"
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


# -- TOML ---------------------------------------------------------------------------------------


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


# -- the manifest -------------------------------------------------------------------------------


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


# -- building -----------------------------------------------------------------------------------


def default_python_paths() -> list[Path]:
    """The running interpreter's ``sys.path`` directories (its standard library, the venv's
    site-packages, ``.pth`` additions) and the directory ppml itself is imported from.

    ``sys.path[0]``, the directory of whatever script is running (or the current directory), is
    left out: it belongs to the invoking program, not to the application's environment.
    """
    import ppml

    seen: dict[str, Path] = {}
    # An editable install may import ppml through a finder hook rather than a sys.path entry.
    for entry in [*sys.path[1:], os.path.dirname(os.path.dirname(os.path.abspath(ppml.__file__)))]:
        if entry and os.path.isdir(entry):
            path = Path(os.path.abspath(entry))
            seen.setdefault(str(path), path)
    return list(seen.values())


def _walk(root: Path, *, include_bytecode: bool) -> Iterable[Path]:
    if root.is_file():
        yield root
        return
    for directory, subdirs, files in os.walk(root):
        if not include_bytecode:
            subdirs[:] = [d for d in subdirs if d != "__pycache__"]
        subdirs.sort()
        for name in sorted(files):
            if not include_bytecode and name.endswith(".pyc"):
                continue
            path = Path(directory, name)
            if path.is_file():  # skips sockets, FIFOs and dangling symlinks
                yield path


def _existing(path: Path, what: str) -> Path:
    absolute = Path(os.path.abspath(path))
    if not absolute.exists():
        raise InputNotFound(absolute)
    if not (absolute.is_file() or absolute.is_dir()):
        raise NotAFile(absolute, f"{what} is neither a regular file nor a directory")
    return absolute


def _mount_roots(paths: Iterable[Path]) -> list[str]:
    roots: list[str] = []
    for candidate in sorted({str(p if p.is_dir() else p.parent) for p in paths}):
        if not any(candidate == r or candidate.startswith(r.rstrip("/") + "/") for r in roots):
            roots.append(candidate)
    return roots


def build_manifest(
    *,
    entrypoint: Path,
    app_files: Sequence[Path],
    python: Path | None = None,
    python_paths: Sequence[Path] | None = None,
    spark_jars: Sequence[Path] = (),
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    enclave_size: str = "8G",
    max_threads: int = 64,
    debug: bool = False,
    isv_prod_id: int = 0,
    isv_svn: int = 0,
    allowed_files: Sequence[str] = (),
    extra_files: Sequence[Path] = (),
    include_bytecode: bool = False,
    loader_entrypoint: str = DEFAULT_LIBOS_URI,
    progress: Callable[[int, int], None] | None = None,
) -> Manifest:
    """A strict Gramine manifest that runs ``python entrypoint *argv`` and trusts exactly the files
    it may load.

    Trusted (hashed now) are: the interpreter (``python``, default :data:`sys.executable`, with
    symlinks resolved, since a venv's ``python`` is a link), ``entrypoint``, every file under
    ``app_files``, ``python_paths`` (default :func:`default_python_paths`), ``spark_jars`` and
    ``extra_files`` (for example system libraries). Directories are walked recursively;
    ``__pycache__`` directories and ``*.pyc`` files are skipped unless ``include_bytecode``
    (Python then compiles from the trusted sources; ``PYTHONDONTWRITEBYTECODE=1`` is set).

    ``loader.argv`` is ``[python, entrypoint, *argv]``; the environment is ``PYTHONPATH`` (the
    python paths), ``PYTHONDONTWRITEBYTECODE=1``, ``PYTHONNOUSERSITE=1``, then ``env``. Each
    directory that holds trusted files is mounted at the same path inside the enclave.

    Hashing a whole Python environment takes seconds (60,000 files): ``progress(hashed, total)``
    is called after each file.

    Warns :class:`~ppml.errors.UnsafeWarning` for ``debug=True`` and for any ``allowed_files``.

    Raises:
        InputNotFound: a listed file or directory does not exist.
        UsageError: a bad size, thread count or ISV value.
    """
    interpreter = Path(os.path.realpath(python if python is not None else sys.executable))
    if not interpreter.is_file():
        raise InputNotFound(interpreter)
    script = _existing(entrypoint, "the entrypoint")
    if not script.is_file():
        raise NotAFile(script, "the entrypoint must be a file (a Python script)")
    paths = [_existing(p, "a python path") for p in (python_paths if python_paths is not None
                                                     else default_python_paths())]
    roots = [
        interpreter,
        script,
        *(_existing(p, "an application file") for p in app_files),
        *paths,
        *(_existing(p, "a Spark jar directory") for p in spark_jars),
        *(_existing(p, "an extra file") for p in extra_files),
    ]
    found: dict[str, Path] = {}
    for root in roots:
        for path in _walk(root, include_bytecode=include_bytecode):
            found.setdefault(str(path), path)
    trusted_files = []
    for path in found.values():
        trusted_files.append(TrustedFile.of(path))
        if progress is not None:
            progress(len(trusted_files), len(found))
    trusted = tuple(trusted_files)

    environment = {
        "PYTHONPATH": os.pathsep.join(str(p) for p in paths),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
    }
    environment.update(env or {})
    if debug:
        warnings.warn(
            "building a DEBUG enclave manifest (sgx.debug = true): the host can read and change "
            "the enclave's memory; never use it for real data",
            UnsafeWarning,
            stacklevel=2,
        )
    if allowed_files:
        warnings.warn(
            f"sgx.allowed_files lists {len(allowed_files)} file(s) the host may change at will: "
            "they are neither hashed nor protected",
            UnsafeWarning,
            stacklevel=2,
        )
    return Manifest(
        libos_entrypoint=str(interpreter),
        loader_entrypoint=loader_entrypoint,
        argv=(str(interpreter), str(script), *(argv or ())),
        env=tuple(environment.items()),
        mounts=tuple(_mount_roots(roots)),
        trusted_files=trusted,
        allowed_files=tuple(allowed_files),
        enclave_size=enclave_size,
        max_threads=max_threads,
        debug=debug,
        isv_prod_id=isv_prod_id,
        isv_svn=isv_svn,
    )


# -- measuring and signing ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """What an operator registers with the attestation service for this enclave."""

    mr_enclave: bytes
    mr_signer: bytes
    #: :data:`SOURCE_GRAMINE` or :data:`SOURCE_SIMULATED`: who computed ``mr_enclave``.
    source: str


Tool = Path | str | None | Literal["auto"]


def find_gramine_sgx_sign(search_path: str | None = None) -> Path | None:
    """``gramine-sgx-sign`` on ``search_path`` (default ``$PATH``), or None."""
    found = shutil.which(GRAMINE_SGX_SIGN, path=search_path)
    return Path(found) if found else None


def _resolve_tool(tool: Tool) -> Path | None:
    if tool == "auto":
        return find_gramine_sgx_sign()
    return None if tool is None else Path(tool)


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


def _gramine_sigstruct(tool: Path, manifest_path: Path, key_path: Path) -> Sigstruct:
    """Run ``gramine-sgx-sign`` into a temporary directory and return the SIGSTRUCT it wrote."""
    with tempfile.TemporaryDirectory(prefix="ppml-gramine-sign-") as tmp:
        sig_path = Path(tmp, "enclave.sig")
        command = [
            str(tool), "--manifest", str(manifest_path), "--key", str(key_path),
            "--output", str(Path(tmp, "enclave.manifest.sgx")), "--sigfile", str(sig_path),
        ]
        try:
            result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=3600)
        except OSError as exc:
            raise UsageError(f"cannot run {tool}: {exc.strerror or exc}") from exc
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise UsageError(f"{tool} failed with exit code {result.returncode}: " + " | ".join(tail))
        try:
            raw = sig_path.read_bytes()
        except FileNotFoundError:
            raise UsageError(f"{tool} succeeded but wrote no SIGSTRUCT to {sig_path}") from None
    sig = Sigstruct.from_bytes(raw)
    verify_sigstruct(sig)
    return sig


def measure(manifest_path: Path | str, key_path: Path | str, *, tool: Tool = "auto") -> Measurement:
    """``mr_enclave`` and ``mr_signer`` of the enclave this manifest describes, signed by this key.

    With ``gramine-sgx-sign`` (``tool="auto"`` finds it on ``$PATH``; a path uses that
    executable), its SIGSTRUCT's ENCLAVEHASH is the real SGX MRENCLAVE and ``source`` is
    :data:`SOURCE_GRAMINE`. Without it (or with ``tool=None``), ``mr_enclave`` is
    :func:`ppml.core.measurement.measure_manifest` of the manifest file's exact bytes and
    ``source`` is :data:`SOURCE_SIMULATED`.

    Raises:
        InputNotFound: no such manifest or key.
        UsageError: a bad key (see :func:`~ppml.core.measurement.load_enclave_key`) or manifest,
            or ``gramine-sgx-sign`` failed.
        AttestationFailed: ``gramine-sgx-sign`` wrote a SIGSTRUCT that does not verify or was
            signed by another key.
    """
    manifest_path, key_path = Path(manifest_path), Path(key_path)
    manifest_bytes = read_manifest_bytes(manifest_path)
    settings = manifest_settings(manifest_bytes, manifest_path)
    signer = mr_signer(load_enclave_key(key_path))
    gramine = _resolve_tool(tool)
    if gramine is not None:
        sig = _gramine_sigstruct(gramine, manifest_path, key_path)
        if sig.mr_signer != signer:
            raise AttestationFailed(f"{gramine} signed with another key than {key_path}")
        return Measurement(mr_enclave=sig.enclave_hash, mr_signer=signer, source=SOURCE_GRAMINE)
    mr_enclave = measure_manifest(
        manifest_bytes, enclave_size=settings.enclave_size, max_threads=settings.max_threads
    )
    return Measurement(mr_enclave=mr_enclave, mr_signer=signer, source=SOURCE_SIMULATED)


def sign(
    manifest_path: Path | str,
    key_path: Path | str,
    out_sig: Path | str,
    *,
    date: datetime.date | None = None,
    overwrite: bool = False,
    tool: Tool = "auto",
) -> tuple[Sigstruct, Measurement]:
    """Write the 1808-byte SIGSTRUCT for this manifest's measurement to ``out_sig``.

    With ``gramine-sgx-sign`` the SIGSTRUCT is the one it produced. Otherwise ppml signs
    ENCLAVEHASH = the simulated ``mr_enclave`` with ATTRIBUTES = MODE64BIT (+ DEBUG if the manifest
    says ``sgx.debug = true``), XFRM = x87|SSE, Gramine's default masks, ISVPRODID/ISVSVN from the
    manifest and ``date`` (default: today, UTC).

    Raises:
        OutputExists: ``out_sig`` exists and ``overwrite`` is false.
        (and everything :func:`measure` raises)
    """
    manifest_path, key_path, out_path = Path(manifest_path), Path(key_path), Path(out_sig)
    if out_path.exists() and not overwrite:
        raise OutputExists(out_path)
    manifest_bytes = read_manifest_bytes(manifest_path)
    settings = manifest_settings(manifest_bytes, manifest_path)
    key = load_enclave_key(key_path)
    gramine = _resolve_tool(tool)
    if gramine is not None:
        sig = _gramine_sigstruct(gramine, manifest_path, key_path)
        if sig.mr_signer != mr_signer(key):
            raise AttestationFailed(f"{gramine} signed with another key than {key_path}")
        source = SOURCE_GRAMINE
    else:
        sig = sign_sigstruct(
            key,
            enclave_hash=measure_manifest(
                manifest_bytes, enclave_size=settings.enclave_size, max_threads=settings.max_threads
            ),
            isv_prod_id=settings.isv_prod_id,
            isv_svn=settings.isv_svn,
            attributes=enclave_attributes(debug=settings.debug),
            date=date or datetime.datetime.now(datetime.timezone.utc).date(),
        )
        source = SOURCE_SIMULATED
    raw = sig.to_bytes()
    assert len(raw) == SIGSTRUCT_SIZE
    _write_atomically(out_path, raw, overwrite=overwrite)
    return sig, Measurement(mr_enclave=sig.enclave_hash, mr_signer=sig.mr_signer, source=source)
