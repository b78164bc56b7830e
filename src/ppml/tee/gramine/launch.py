"""Starting a ppml process under ``gramine-sgx``, and what that process reads once inside.

A Gramine manifest built by ppml fixes ``loader.argv`` (never
``loader.insecure__use_cmdline_argv``): ``gramine-sgx APP ARGS…`` ignores ``ARGS``. What a job
needs to vary (``ppml submit``'s options, the arguments Spark gives a pod) reaches the enclave
through one environment variable the manifest passes through by name, :data:`ARGV_VARIABLE`,
holding a JSON array of strings. The manifest's fixed argv is ``python -m ppml.cli.main tee
gramine-entry``, which reads that variable and runs one of :data:`ENTRY_COMMANDS` only; each of
them attests before it runs anything else. The host chooses the arguments, as it chooses them
for ``spark-submit`` anywhere: what the enclave commits to is the code that can run (every file
is a trusted file under a strict file policy) and that attestation comes first.

Outside the enclave (no ``/dev/attestation``), :func:`gramine_command` builds the ``gramine-sgx``
command line and environment; :func:`run_under_gramine` runs it, or raises
:class:`~ppml.errors.GramineNotInstalled` naming what to install when ``gramine-sgx`` is not on ``PATH``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from ppml.errors import GramineNotInstalled, UsageError

__all__ = [
    "ARGV_VARIABLE",
    "ATTESTATION_ROOT",
    "ENTRY_COMMANDS",
    "GRAMINE_SGX",
    "args_from_environment",
    "encode_args",
    "find_gramine_sgx",
    "gramine_command",
    "inside_gramine",
    "run_under_gramine",
]

GRAMINE_SGX: Final = "gramine-sgx"
#: The one variable that carries a job's arguments into the enclave (a JSON array of strings).
ARGV_VARIABLE: Final = "PPML_GRAMINE_ARGV"
#: Gramine's attestation pseudo-files: present inside an SGX enclave only.
ATTESTATION_ROOT: Final = Path("/dev/attestation")
#: What ``ppml tee gramine-entry`` may run, as the first word of :data:`ARGV_VARIABLE`:
#: ``submit`` is ``ppml submit`` (its gate attests the driver), ``spark-pod`` is a Spark driver
#: or executor pod's entrypoint under ``ppml tee launch`` (attests, then runs it with a key agent).
ENTRY_COMMANDS: Final = ("submit", "spark-pod")
_MAX_ARGV_BYTES: Final = 1 << 20

INSTALL_HINT: Final = (
    "install Gramine (apt-get install gramine, from https://packages.gramineproject.io/) and Intel's "
    "SGX runtime (libsgx-urts, libsgx-dcap-default-qpl, sgx-aesm-service from "
    "https://download.01.org/intel-sgx/sgx_repo/ubuntu) on an SGX host, or run in the ppml base "
    "image (deploy/images/base/Dockerfile) on one"
)


def find_gramine_sgx(search_path: str | None = None) -> Path | None:
    """``gramine-sgx`` on ``search_path`` (default ``$PATH``), or None."""
    found = shutil.which(GRAMINE_SGX, path=search_path)
    return Path(found) if found else None


def inside_gramine(root: Path = ATTESTATION_ROOT) -> bool:
    """True inside a Gramine SGX enclave (its ``/dev/attestation`` pseudo-files exist)."""
    return root.is_dir()


def encode_args(args: Sequence[str]) -> str:
    """``args`` as the value of :data:`ARGV_VARIABLE`."""
    if not all(isinstance(a, str) for a in args):
        raise UsageError("enclave arguments must be strings")
    value = json.dumps(list(args), ensure_ascii=False, separators=(",", ":"))
    if "\0" in value or len(value.encode("utf-8")) > _MAX_ARGV_BYTES:
        raise UsageError("the enclave's arguments are too long or contain a NUL byte")
    return value


def args_from_environment(environ: Mapping[str, str]) -> list[str]:
    """The arguments :func:`encode_args` wrote into :data:`ARGV_VARIABLE`; the first must be one
    of :data:`ENTRY_COMMANDS`.

    Raises:
        UsageError: the variable is missing, not a JSON array of strings, too long, or names
            another command.
    """
    text = environ.get(ARGV_VARIABLE)
    if text is None:
        raise UsageError(f"{ARGV_VARIABLE} is not set: start this enclave with `ppml tee gramine-run` "
                         "or `ppml submit --tee sgx-gramine`")
    if len(text.encode("utf-8")) > _MAX_ARGV_BYTES:
        raise UsageError(f"{ARGV_VARIABLE} is longer than {_MAX_ARGV_BYTES} bytes")
    try:
        args = json.loads(text)
    except ValueError:
        raise UsageError(f"{ARGV_VARIABLE} is not a JSON array of strings") from None
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise UsageError(f"{ARGV_VARIABLE} is not a non-empty JSON array of strings")
    if args[0] not in ENTRY_COMMANDS:
        raise UsageError(f"{ARGV_VARIABLE} names {args[0]!r}; the enclave runs only {', '.join(ENTRY_COMMANDS)}")
    return args


def gramine_command(app: str, args: Sequence[str], environ: Mapping[str, str], *,
                    gramine_sgx: Path | str = GRAMINE_SGX) -> tuple[list[str], dict[str, str]]:
    """``gramine-sgx APP`` and its environment: ``environ`` plus :data:`ARGV_VARIABLE`.

    Nothing goes on ``gramine-sgx``'s command line but ``APP``: the manifest ignores the rest.
    """
    if not args or args[0] not in ENTRY_COMMANDS:
        raise UsageError(f"the enclave runs only {', '.join(ENTRY_COMMANDS)}")
    if not app or any(c.isspace() for c in app):
        raise UsageError(f"{app!r} must be a Gramine application path without spaces")
    env = dict(environ)
    env[ARGV_VARIABLE] = encode_args(args)
    return [str(gramine_sgx), app], env


def run_under_gramine(app: str, args: Sequence[str], environ: Mapping[str, str], *,
                      search_path: str | None = None) -> int:
    """Run ``gramine-sgx APP`` with ``args`` in :data:`ARGV_VARIABLE`; its exit code.

    Raises:
        GramineNotInstalled: ``gramine-sgx`` is not on ``search_path`` (default ``$PATH``).
    """
    tool = find_gramine_sgx(search_path if search_path is not None else environ.get("PATH"))
    if tool is None:
        raise GramineNotInstalled(app, INSTALL_HINT)
    argv, env = gramine_command(app, args, environ, gramine_sgx=tool)
    try:
        return subprocess.run(argv, env=env, check=False).returncode
    except OSError as exc:
        raise UsageError(f"cannot run {tool}: {exc.strerror or exc}") from exc
