"""The hardware evidence backends against directories that imitate their kernel interfaces.

Gramine's /dev/attestation is plain files for our purpose. configfs-tsm generates the quote when
``outblob`` is read; a FIFO imitates that deterministically: the reader blocks until the
imitation "TDX module" thread has read ``inblob`` and answers with a quote binding it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from ppml.errors import AttestationFailed
from ppml.tee.backends import SgxGramine, TdxConfigfsTsm

REPORT_DATA = bytes(range(64))


def test_sgx_gramine_writes_report_data_and_reads_the_quote(tmp_path: Path) -> None:
    (tmp_path / "attestation_type").write_text("dcap")
    (tmp_path / "quote").write_bytes(b"QUOTE-BYTES" * 10)
    evidence = SgxGramine(tmp_path).get_evidence(REPORT_DATA)
    assert evidence.tee == "sgx" and evidence.data == b"QUOTE-BYTES" * 10
    assert (tmp_path / "user_report_data").read_bytes() == REPORT_DATA


def test_sgx_gramine_refuses_non_dcap_and_missing_device(tmp_path: Path) -> None:
    with pytest.raises(AttestationFailed, match="not running inside a Gramine SGX enclave"):
        SgxGramine(tmp_path / "absent").get_evidence(REPORT_DATA)
    (tmp_path / "attestation_type").write_text("epid")
    with pytest.raises(AttestationFailed, match="need 'dcap'"):
        SgxGramine(tmp_path).get_evidence(REPORT_DATA)
    with pytest.raises(ValueError):
        SgxGramine(tmp_path).get_evidence(b"short")


def _tdx_module(entry: Path, *, generation_step: int = 1, rounds: int = 1) -> threading.Thread:
    """Answer ``rounds`` outblob reads with a quote that embeds the inblob just written."""

    def serve() -> None:
        import time

        for _ in range(rounds):
            # A round starts when the backend has written inblob, i.e. after it finished reading
            # the previous outblob (so two rounds never feed one read of the FIFO).
            deadline = time.monotonic() + 10
            while not (entry / "inblob").exists() and time.monotonic() < deadline:
                time.sleep(0.005)
            with open(entry / "outblob", "wb") as fifo:  # blocks until the backend opens it
                data = (entry / "inblob").read_bytes()
                (entry / "inblob").unlink()
                generation = int((entry / "generation").read_text())
                (entry / "generation").write_text(str(generation + generation_step))
                fifo.write(b"TDQUOTE:" + data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def _entry(root: Path) -> Path:
    entry = root / "report0"
    entry.mkdir(parents=True)
    (entry / "generation").write_text("0")
    (entry / "provider").write_text("tdx_guest\n")
    os.mkfifo(entry / "outblob")
    return entry


def test_tdx_configfs_tsm_binds_the_report_data(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    module = _tdx_module(entry)
    evidence = TdxConfigfsTsm(tmp_path, entry_name="report0").get_evidence(REPORT_DATA)
    module.join(timeout=10)
    assert evidence.tee == "tdx" and evidence.data == b"TDQUOTE:" + REPORT_DATA


def test_tdx_concurrent_writer_is_detected(tmp_path: Path) -> None:
    """Another process wrote the same entry between our write and our read: the generation moved
    by two, so the quote may hold the other process's data. Retried, then refused."""
    entry = _entry(tmp_path)
    module = _tdx_module(entry, generation_step=2, rounds=3)
    with pytest.raises(AttestationFailed, match="written concurrently"):
        TdxConfigfsTsm(tmp_path, entry_name="report0", attempts=3).get_evidence(REPORT_DATA)
    module.join(timeout=10)


def test_tdx_wrong_provider_and_missing_interface(tmp_path: Path) -> None:
    with pytest.raises(AttestationFailed, match="not a TDX guest"):
        TdxConfigfsTsm(tmp_path / "absent").get_evidence(REPORT_DATA)
    entry = _entry(tmp_path)
    (entry / "provider").write_text("sev_guest\n")
    module = _tdx_module(entry)
    with pytest.raises(AttestationFailed, match="sev_guest"):
        TdxConfigfsTsm(tmp_path, entry_name="report0").get_evidence(REPORT_DATA)
    module.join(timeout=10)
