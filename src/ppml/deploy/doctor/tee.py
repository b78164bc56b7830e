"""The TEE device of this host or pod, for the TEE the deployment says it uses."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from ppml.deploy.doctor.result import CheckResult, Status

__all__ = ["TEES", "check_tee"]

TEES: Final = ("none", "simulated", "sgx-gramine", "tdx")


def check_tee(tee: str | None, *, root: Path = Path("/")) -> CheckResult:
    """The device the chosen TEE needs, under ``root`` (``/`` on a real host or pod).

    ``sgx-gramine``: inside Gramine, ``/dev/attestation`` with type ``dcap``; outside it (the pod
    that will start ``gramine-sgx``), ``/dev/sgx_enclave`` readable and writable plus the AESM
    socket (``/var/run/aesmd/aesm.socket``) that Gramine gets quotes from (``/dev/sgx_provision``
    alone does not do: it serves the quoting enclave inside aesmd). ``tdx``: configfs-tsm
    (``/sys/kernel/config/tsm/report``), which ppml's TDX backend uses; ``/dev/tdx_guest`` alone
    is the older ioctl interface.
    """
    if tee is None:
        return CheckResult(name="tee", status=Status.FAIL, detail="not checked: no TEE named",
                           fix="give --tee none|simulated|sgx-gramine|tdx (default $PPML_TEE_BACKEND)")
    if tee == "none":
        return CheckResult(name="tee", status=Status.WARN, detail="--tee none: no TEE, nothing protects data in use",
                           fix="deploy with --tee sgx-gramine or tdx, or --skip tee to accept it")
    if tee == "simulated":
        return CheckResult(name="tee", status=Status.WARN,
                           detail="SIMULATED TEE: no hardware protection; evidence is signed by a software key "
                                  "and data in use is readable by this host",
                           fix="deploy with --tee sgx-gramine or tdx, or --skip tee to accept it (demo only)")
    if tee == "sgx-gramine":
        return _check_sgx(root)
    return _check_tdx(root)


def _check_sgx(root: Path) -> CheckResult:
    attestation = root / "dev/attestation"
    kind_file = attestation / "attestation_type"
    if kind_file.exists():
        kind = kind_file.read_text().strip()
        if kind != "dcap":
            return CheckResult(name="tee", status=Status.FAIL,
                               detail=f"inside Gramine, but {kind_file} says {kind!r}",
                               fix="set sgx.remote_attestation = \"dcap\" in the Gramine manifest and re-sign it")
        return CheckResult(name="tee", status=Status.PASS, detail=f"inside a Gramine SGX enclave ({attestation}, dcap)")
    enclave = root / "dev/sgx_enclave"
    socket_path = root / "var/run/aesmd/aesm.socket"
    if not enclave.exists():
        legacy = root / "dev/isgx"
        hint = (f" ({legacy} is the out-of-tree driver; Gramine needs the in-kernel one)"
                if legacy.exists() else "")
        return CheckResult(name="tee", status=Status.FAIL, detail=f"{enclave} not found{hint}",
                           fix="run on an SGX node (Linux ≥ 5.11 with SGX enabled in BIOS); in Kubernetes request "
                               "sgx.intel.com/enclave from Intel's SGX device plugin")
    if not os.access(enclave, os.R_OK | os.W_OK):
        return CheckResult(name="tee", status=Status.FAIL, detail=f"{enclave}: not readable and writable by this user",
                           fix="add the user to the device's group (sgx), or supplementalGroups in the pod")
    if not socket_path.exists():
        return CheckResult(name="tee", status=Status.FAIL,
                           detail=f"{enclave} present, but no AESM socket {socket_path}",
                           fix="run aesmd (sgx-aesm-service with the DCAP ECDSA plugin) and, in a pod, mount the "
                               "host's /var/run/aesmd")
    return CheckResult(name="tee", status=Status.PASS, detail=f"SGX: {enclave} and {socket_path}")


def _check_tdx(root: Path) -> CheckResult:
    report = root / "sys/kernel/config/tsm/report"
    guest = root / "dev/tdx_guest"
    if report.is_dir():
        extra = f", {guest}" if guest.exists() else ""
        return CheckResult(name="tee", status=Status.PASS, detail=f"TDX guest: configfs-tsm {report}{extra}")
    if guest.exists():
        return CheckResult(name="tee", status=Status.FAIL,
                           detail=f"{guest} present, but no configfs-tsm {report}",
                           fix="mount configfs (mount -t configfs none /sys/kernel/config) on a guest kernel "
                               "≥ 6.7 with CONFIG_TSM_REPORTS")
    return CheckResult(name="tee", status=Status.FAIL, detail=f"not a TDX guest: neither {report} nor {guest}",
                       fix="run inside a TDX trust domain (in Kubernetes, a kata-qemu-tdx runtime class)")
