"""The HEBackend contract, run against every implementation (STYLE rule 11): Paillier and CKKS.

One abstract class states what any backend must do; a subclass per backend supplies the key holder,
a second unrelated key holder and the tolerance its encoding allows (Paillier is exact to 2^-32,
CKKS approximate to about 1e-5).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from ppml.errors import HeKeyMismatch, InvalidCiphertext, MalformedHeData, PlaintextOverflow, UnsafeWarning
from ppml.fl.he import CkksBackend, HEBackend, PaillierBackend, generate_paillier_keypair

SRC = Path(__file__).resolve().parents[1] / "src"


class HEBackendContract:
    """What every :class:`~ppml.fl.he.backend.HEBackend` must satisfy. Subclasses set the fixtures."""

    #: Absolute and relative tolerance of a decrypted result.
    atol: ClassVar[float]
    rtol: ClassVar[float]

    @pytest.fixture(scope="class")
    @classmethod
    def holder(cls) -> Any:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def other(cls) -> Any:
        """A key holder under an unrelated key."""
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def public(cls, holder: Any) -> Any:
        """A passive party's backend, built from the holder's public key bytes."""
        return type(holder).from_public_key_bytes(holder.public_key_bytes(), **cls.public_options())

    @classmethod
    def public_options(cls) -> dict[str, Any]:
        return {}

    def close(self, actual: list[float], expected: Any) -> None:
        np.testing.assert_allclose(np.asarray(actual), np.asarray(expected, dtype=np.float64),
                                   atol=self.atol, rtol=self.rtol)

    # -- the contract -----------------------------------------------------------------------------

    def test_satisfies_the_protocol(self, holder: Any, public: Any) -> None:
        backend: HEBackend[Any] = holder
        assert isinstance(backend.name, str) and backend.name
        assert holder.can_decrypt and not public.can_decrypt

    def test_round_trip(self, holder: Any) -> None:
        values = [0.0, 1.5, -2.25, 1e-3, -12345.678, 3.0]
        self.close(holder.decrypt(holder.encrypt(values)), values)
        assert holder.decrypt(holder.encrypt([])) == []

    def test_add_and_add_plain(self, holder: Any) -> None:
        rng = np.random.default_rng(1)
        a, b, p = rng.normal(size=(3, 20)) * 100
        total = holder.add(holder.encrypt(a.tolist()), holder.encrypt(b.tolist()))
        self.close(holder.decrypt(total), a + b)
        self.close(holder.decrypt(holder.add_plain(total, p.tolist())), a + b + p)

    def test_multiply_plain(self, holder: Any) -> None:
        values = [1.0, -2.5, 3.25, -0.125, 0.0]
        factors = [2.0, -3.0, 0.5, -4.0, 7.0]
        ciphertext = holder.encrypt(values)
        self.close(holder.decrypt(holder.multiply_plain(ciphertext, -1.5)), np.multiply(values, -1.5))
        self.close(holder.decrypt(holder.multiply_plain(ciphertext, 3)), np.multiply(values, 3))
        self.close(holder.decrypt(holder.multiply_plain(ciphertext, factors)), np.multiply(values, factors))

    def test_matmul_plain_against_numpy(self, holder: Any, public: Any) -> None:
        rng = np.random.default_rng(2)
        d = rng.normal(size=50)
        x = rng.normal(size=(50, 3))
        result = public.matmul_plain(public.encrypt(d.tolist()), x)
        self.close(holder.decrypt(holder.ciphertext_from_bytes(public.ciphertext_to_bytes(result))), d @ x)
        # A masked gradient: the passive party adds its plaintext mask before sending.
        mask = rng.normal(size=3)
        self.close(holder.decrypt(public.add_plain(result, mask.tolist())), d @ x + mask)

    def test_public_only_encrypts_and_combines_but_cannot_decrypt(self, holder: Any, public: Any) -> None:
        ciphertext = public.add(public.encrypt([1.0, 2.0]), public.encrypt([3.0, -4.0]))
        ciphertext = public.multiply_plain(public.add_plain(ciphertext, [1.0, 1.0]), 2.0)
        with pytest.raises(HeKeyMismatch):
            public.decrypt(ciphertext)
        self.close(holder.decrypt(ciphertext), [10.0, -2.0])

    def test_bytes_from_public_party_back_to_holder(self, holder: Any, public: Any) -> None:
        values = np.linspace(-50, 50, 37)
        wire = public.ciphertext_to_bytes(public.multiply_plain(public.encrypt(values.tolist()), 0.5))
        assert isinstance(wire, bytes)
        received = holder.ciphertext_from_bytes(wire)
        self.close(holder.decrypt(received), values * 0.5)
        # And back: the holder's serialisation parses on the public side.
        again = public.ciphertext_from_bytes(holder.ciphertext_to_bytes(received))
        self.close(holder.decrypt(again), values * 0.5)

    def test_ciphertext_under_another_key_is_refused(self, holder: Any, other: Any) -> None:
        foreign = other.encrypt([1.0, 2.0])
        with pytest.raises(MalformedHeData):
            holder.ciphertext_from_bytes(other.ciphertext_to_bytes(foreign))
        with pytest.raises(HeKeyMismatch):
            holder.decrypt(foreign)
        with pytest.raises(HeKeyMismatch):
            holder.add(holder.encrypt([1.0, 2.0]), foreign)

    def test_malformed_and_truncated_bytes_are_refused(self, holder: Any) -> None:
        wire = holder.ciphertext_to_bytes(holder.encrypt([1.0, -1.0, 2.0]))
        rng = random.Random(3)
        candidates = [b"", b"\x00", wire[:1], wire[: len(wire) // 2], wire[:-1], wire + b"\x00",
                      bytes(len(wire)), rng.randbytes(len(wire))]
        candidates += [wire[:cut] for cut in range(0, 64, 3)]
        for bad in candidates:
            with pytest.raises(MalformedHeData):
                holder.ciphertext_from_bytes(bad)
        assert issubclass(MalformedHeData, InvalidCiphertext)
        for bad_key in [b"", b"\x01", holder.public_key_bytes()[:40], b"\xff" * 64]:
            with pytest.raises(MalformedHeData):
                type(holder).from_public_key_bytes(bad_key, **self.public_options())

    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
    def test_non_finite_input_is_refused(self, holder: Any, bad: float) -> None:
        with pytest.raises(PlaintextOverflow):
            holder.encrypt([1.0, bad])
        ciphertext = holder.encrypt([1.0, 2.0])
        with pytest.raises(PlaintextOverflow):
            holder.add_plain(ciphertext, [bad, 0.0])
        with pytest.raises(PlaintextOverflow):
            holder.multiply_plain(ciphertext, bad)
        with pytest.raises(PlaintextOverflow):
            holder.matmul_plain(ciphertext, [[1.0], [bad]])


def _paillier(bits: int = 1024) -> PaillierBackend:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsafeWarning)
        public, private = generate_paillier_keypair(bits, unsafe_small_keys=True)
    return PaillierBackend(public, private)


class TestPaillierContract(HEBackendContract):
    atol = 2.0 ** -28
    rtol = 1e-12

    @pytest.fixture(scope="class")
    @classmethod
    def holder(cls) -> PaillierBackend:
        return _paillier()

    @pytest.fixture(scope="class")
    @classmethod
    def other(cls) -> PaillierBackend:
        return _paillier()

    @classmethod
    def public_options(cls) -> dict[str, Any]:
        return {"unsafe_small_keys": True}


class TestCkksContract(HEBackendContract):
    atol = 1e-4
    rtol = 1e-5

    @pytest.fixture(scope="class")
    @classmethod
    def holder(cls) -> CkksBackend:
        return CkksBackend()

    @pytest.fixture(scope="class")
    @classmethod
    def other(cls) -> CkksBackend:
        return CkksBackend()

    def test_long_vectors_are_chunked(self, holder: CkksBackend) -> None:
        rng = np.random.default_rng(4)
        d = rng.normal(size=9000)  # three chunks of at most 4096 slots
        x = rng.normal(size=(9000, 2))
        ciphertext = holder.encrypt(d.tolist())
        assert len(ciphertext) == 9000 and len(ciphertext.chunks) == 3
        received = holder.ciphertext_from_bytes(holder.ciphertext_to_bytes(ciphertext))
        self.close(holder.decrypt(received), d)
        np.testing.assert_allclose(holder.decrypt(holder.matmul_plain(ciphertext, x)), d @ x, atol=1e-3)

    def test_depth_is_two_plaintext_multiplies(self, holder: CkksBackend) -> None:
        from ppml.errors import FederatedLearningError

        once = holder.matmul_plain(holder.encrypt([1.0, 2.0, 3.0]), [[1.0], [1.0], [1.0]])
        twice = holder.multiply_plain(once, 0.5)
        self.close(holder.decrypt(twice), [3.0])
        with pytest.raises(FederatedLearningError, match="depth exhausted"):
            holder.multiply_plain(twice, 2.0)
        with pytest.raises(FederatedLearningError, match="depth exhausted"):
            holder.matmul_plain(twice, [[1.0]])
        self.close(holder.decrypt(holder.add(twice, twice)), [6.0])  # adds stay free

    def test_out_of_range_input_is_refused(self, holder: CkksBackend) -> None:
        with pytest.raises(PlaintextOverflow):
            holder.encrypt([1e6])

    def test_garbage_does_not_kill_the_process(self) -> None:
        """TenSEAL can die with SIGFPE on a tampered wrapper: run hostile bytes in a child process."""
        script = textwrap.dedent("""
            import os, random
            from ppml.errors import FederatedLearningError, MalformedHeData
            from ppml.fl.he import CkksBackend
            backend = CkksBackend()
            good = backend.ciphertext_to_bytes(backend.multiply_plain(backend.encrypt([1.0, -2.0, 3.0]), 0.5))
            rng = random.Random(5)
            outcomes = {"accepted": 0, "refused": 0}
            for index in range(600):
                data = bytearray(good)
                if index % 4 == 0:
                    data = bytearray(os.urandom(rng.randrange(0, 2000)))
                elif index % 4 == 1:  # the headers: ours and SEAL's
                    for _ in range(rng.randrange(1, 4)):
                        data[rng.randrange(29, 29 + 80)] ^= 1 << rng.randrange(8)
                elif index % 4 == 2:
                    for _ in range(rng.randrange(1, 4)):
                        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
                else:
                    data = data[:rng.randrange(len(data))]
                try:
                    vector = backend.ciphertext_from_bytes(bytes(data))
                    backend.decrypt(backend.multiply_plain(backend.add(vector, vector), 2.0))
                    backend.decrypt(backend.matmul_plain(vector, [[1.0]] * len(vector)))
                    outcomes["accepted"] += 1
                except (MalformedHeData, FederatedLearningError):
                    outcomes["refused"] += 1
            print("survived", outcomes)
        """)
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
        assert "survived" in done.stdout
