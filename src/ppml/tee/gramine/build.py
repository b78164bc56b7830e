"""Building a strict manifest: every file a Python application loads, hashed as a trusted file.

:func:`build_manifest` lists the Python interpreter, the ``sys.path`` directories, the application
and Spark's jars as ``sgx.trusted_files`` with their SHA-256, so the manifest, and through it
``mr_enclave``, commits to all of them. The manifest is strict on purpose:

* ``sgx.file_check_policy = "strict"`` and no ``sgx.allowed_files`` unless listed explicitly;
* ``loader.argv`` and ``loader.env.*`` are fixed in the manifest (never
  ``loader.insecure__use_cmdline_argv``, ``loader.argv_src_file`` or
  ``loader.insecure__use_host_env``): the host cannot change what runs;
* ``sgx.debug = false`` unless asked for (a debug enclave's memory is readable by the host).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from ppml.errors import InputNotFound, NotAFile, UnsafeWarning
from ppml.tee.gramine.manifest import DEFAULT_LIBOS_URI, Manifest, TrustedFile

__all__ = ["build_manifest", "default_python_paths", "mount_roots", "walk_files"]


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


def walk_files(root: Path, *, include_bytecode: bool = False) -> Iterator[Path]:
    """The regular files under ``root`` (or ``root`` itself), in sorted order; ``__pycache__``
    directories and ``*.pyc`` files are left out unless ``include_bytecode``."""
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


def mount_roots(directories: Iterable[str]) -> list[str]:
    """The outermost of ``directories`` (sorted): each one not inside another, once."""
    roots: list[str] = []
    for candidate in sorted(set(directories)):
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
        for path in walk_files(root, include_bytecode=include_bytecode):
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
        mounts=tuple(mount_roots(str(p if p.is_dir() else p.parent) for p in roots)),
        trusted_files=trusted,
        allowed_files=tuple(allowed_files),
        enclave_size=enclave_size,
        max_threads=max_threads,
        debug=debug,
        isv_prod_id=isv_prod_id,
        isv_svn=isv_svn,
    )
