"""Secret files on this host or pod: the KMS credentials and the Spark RPC secret (owner, mode,
shape; their content is never shown)."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path
from typing import Final

from ppml.deploy.doctor.result import CheckResult, FileIdentity, Status
from ppml.errors import PpmlError
from ppml.kms.remote import CREDENTIALS_ENV, load_credentials

__all__ = ["MIN_SPARK_SECRET_CHARS", "check_credentials", "check_private_file", "check_spark_secret"]

#: ``ppml.spark.session.read_secret_file`` refuses shorter secrets; ppml generates 64 hex digits.
MIN_SPARK_SECRET_CHARS: Final = 32


def check_private_file(name: str, path: Path, *, identity: FileIdentity) -> CheckResult:
    """Owner and mode of a secret file (PASS when the file may be read for its content).

    Passes ``0600``/``0400`` owned by ``identity``, and the shape a Kubernetes Secret volume has
    in a non-root pod (``0440`` owned by root, group one of ``identity``'s: the kubelet's fsGroup
    change adds group read, and ppml's own pod templates mount secrets so). Anything readable by
    others, group-writable or owned by someone else fails.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        return CheckResult(name=name, status=Status.FAIL, detail=f"{path}: no such file",
                           fix="create it or point at the right file")
    except OSError as exc:
        return CheckResult(name=name, status=Status.FAIL, detail=f"{path}: {exc.strerror}",
                           fix="check the path and its directories' permissions")
    if not stat.S_ISREG(info.st_mode):
        return CheckResult(name=name, status=Status.FAIL, detail=f"{path}: not a regular file",
                           fix="point at the file itself")
    mode = stat.S_IMODE(info.st_mode)
    shown = f"{path}: mode {mode:04o}, owner uid {info.st_uid}"
    if mode & 0o007:
        return CheckResult(name=name, status=Status.FAIL, detail=f"{shown}: readable or writable by others",
                           fix=f"chmod 600 {path} (and rotate the secret: others may have read it)")
    kubernetes_shape = (info.st_uid == 0 and mode in (0o440, 0o400)
                        and info.st_gid in identity.gids)
    if kubernetes_shape and info.st_uid != identity.uid:
        return CheckResult(name=name, status=Status.PASS,
                           detail=f"{shown}, group {info.st_gid}: a read-only Secret volume read through fsGroup")
    if info.st_uid != identity.uid:
        return CheckResult(name=name, status=Status.FAIL,
                           detail=f"{shown}: not owned by this user (uid {identity.uid})",
                           fix=f"chown {identity.uid} {path}, or run as the user the file belongs to")
    if mode & 0o070:
        return CheckResult(name=name, status=Status.FAIL, detail=f"{shown}: group bits set",
                           fix=f"chmod 600 {path}")
    return CheckResult(name=name, status=Status.PASS, detail=shown)


def check_credentials(path: Path | None, *, identity: FileIdentity) -> CheckResult:
    """The KMS credentials file: private (see :func:`check_private_file`) and a credentials file."""
    if path is None:
        return CheckResult(name="credentials", status=Status.FAIL, detail="not checked: no credentials file given",
                           fix=f"give --credentials FILE (or credentials= in the KMS URI, or ${CREDENTIALS_ENV}), "
                               "or --skip credentials")
    result = check_private_file("credentials", path, identity=identity)
    if result.status is not Status.PASS:
        return result
    try:
        credentials = load_credentials(path)
    except PpmlError as exc:
        return CheckResult(name="credentials", status=Status.FAIL, detail=f"{path}: {exc}",
                           fix="write it again from `ppml kms enroll` (JSON with appid and apikey, mode 0600)")
    return dataclasses.replace(result, detail=f"{result.detail}; appid {credentials.appid}")


def check_spark_secret(path: Path | None, *, identity: FileIdentity) -> CheckResult:
    """The Spark RPC secret file: private, and at least :data:`MIN_SPARK_SECRET_CHARS` long.
    Its content is read to count it and never shown."""
    if path is None:
        return CheckResult(name="spark-secret", status=Status.FAIL, detail="not checked: no secret file given",
                           fix="give --spark-secret FILE (the --secret-file of `ppml submit`), or --skip "
                               "spark-secret where Spark makes its own (local master)")
    result = check_private_file("spark-secret", path, identity=identity)
    if result.status is not Status.PASS:
        return result
    try:
        with open(path, "rb") as f:
            length = len(f.read(4096).strip())
    except OSError as exc:
        return CheckResult(name="spark-secret", status=Status.FAIL, detail=f"{path}: {exc.strerror}",
                           fix="make the file readable by this user")
    if length < MIN_SPARK_SECRET_CHARS:
        return CheckResult(name="spark-secret", status=Status.FAIL,
                           detail=f"{path}: secret is {length} characters, fewer than {MIN_SPARK_SECRET_CHARS}",
                           fix=f"make a new one, 256 random bits: (umask 077; openssl rand -hex 32 > {path}), "
                               "and give it to the cluster too")
    return dataclasses.replace(result, detail=f"{result.detail}; {length} characters")
