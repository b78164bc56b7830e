"""The one exception hierarchy of ppml.

Every error ppml raises on purpose is a :class:`PpmlError`. Each carries a human
:meth:`~PpmlError.diagnostics` text and an ``exit_code`` that the ``ppml`` command exits with.
Foreign exceptions (OS, HTTP, SQL, Spark) are mapped only at adapter boundaries, with
``raise X(...) from exc``.

::

    PpmlError                         exit 1   base; never raised itself
    ├── UsageError                    exit 2   bad arguments or configuration
    │   ├── UnknownScheme                      a KMS/backend URI with no registered scheme
    │   └── GramineNotInstalled                --tee sgx-gramine outside an enclave, no gramine-sgx
    ├── InputError                    exit 3   a path that cannot be used as asked
    │   ├── InputNotFound                      no such file or directory
    │   ├── NotAFile                           a directory (or other) where a file is expected
    │   ├── OutputExists                       refusing to overwrite without --force
    │   ├── OutputDirectoryMissing             an output's directory does not exist
    │   └── NotAnEncryptedModel                a model path without ppml's model manifest
    ├── InvalidCiphertext             exit 4   ANY failure to authenticate or parse ciphertext;
    │   │                                      opaque on purpose: never says which check failed
    │   ├── NotAnEnvelope                      no ppml magic: the file is not a ppml file at all
    │   └── MalformedHeData                    HE public key or ciphertext bytes that do not parse
    ├── WeakLegacyKey                 exit 5   a BigDL legacy key that gives no real protection
    ├── FederatedLearningError        exit 9   a federated-learning computation cannot go on
    │   ├── PlaintextOverflow                  a value outside the HE encoding's range (encode or decode)
    │   ├── HeKeyMismatch                      HE operands under different public keys, or no secret key
    │   ├── RoundAborted                       a federated round stopped (disconnect, refusal, failure)
    │   └── MalformedModel                     bytes meant as a federated model share do not parse
    ├── AttestationFailed             exit 8   evidence, policy or token rejected (says why)
    │   ├── QuoteFormatError                   malformed, truncated or oversized evidence
    │   ├── PolicyNotFound                     no such policy (or another app's)
    │   ├── NonceRejected                      unknown, expired or already used nonce
    │   ├── TokenRejected                      bad signature, expired, wrong audience/policy
    │   └── CoordinatorNotAttested             the FL coordinator did not prove its TEE and policy
    ├── ServiceUnavailable            exit 6   a service (KMS, attestation) or its storage cannot be reached
    │   └── KmsUnavailable                     … the key service (also a KeyServiceError)
    ├── RequestRejected               exit 6   a service refused a request as malformed or out of bounds
    │   ├── KmsRequestRejected                 … the key service (also a KeyServiceError)
    │   └── InvalidPeerMessage                 a federated peer's message is malformed, off-curve or
    │                                          does not authenticate (PSI)
    └── KeyServiceError               exit 6   a key service (local store or remote KMS) failed
        ├── KeyNotFound                        unknown key id (or one of another tenant)
        ├── KeyDisabled                        the key exists but is disabled or pending deletion
        ├── KeyStoreUnreadable                 the key store or a key file cannot be read
        ├── RootKeyMismatch                    the KMS database was sealed with another root key
        ├── KmsUnavailable                     (see above)
        ├── AuthenticationFailed               unknown app, bad signature or apikey
        │   └── ReplayedRequest                a request (timestamp/nonce) seen before, or stale
        ├── PermissionDenied                   authenticated, but not allowed to do this
        └── KmsRequestRejected                 (see above)

Warnings: ``UnsafeWarning`` (a ``UserWarning``) is emitted on every use of an unsafe option.

Messages never contain key material: fields hold key *ids*, paths and reasons only.
"""

from __future__ import annotations

import shlex
from pathlib import Path

__all__ = [
    "AttestationFailed",
    "AuthenticationFailed",
    "CoordinatorNotAttested",
    "FederatedLearningError",
    "GramineNotInstalled",
    "HeKeyMismatch",
    "InputError",
    "InputNotFound",
    "InvalidCiphertext",
    "InvalidPeerMessage",
    "KeyDisabled",
    "KeyNotFound",
    "KeyServiceError",
    "KeyStoreUnreadable",
    "KmsRequestRejected",
    "KmsUnavailable",
    "MalformedHeData",
    "MalformedModel",
    "NonceRejected",
    "NotAFile",
    "NotAnEncryptedModel",
    "NotAnEnvelope",
    "OutputDirectoryMissing",
    "OutputExists",
    "PermissionDenied",
    "PlaintextOverflow",
    "PolicyNotFound",
    "PpmlError",
    "QuoteFormatError",
    "ReplayedRequest",
    "RequestRejected",
    "RootKeyMismatch",
    "RoundAborted",
    "ServiceUnavailable",
    "TokenRejected",
    "UnknownScheme",
    "UnsafeWarning",
    "UsageError",
    "WeakLegacyKey",
]


class PpmlError(Exception):
    """Base of every error ppml raises on purpose."""

    exit_code: int = 1
    #: One line saying what to do about it; shown under the message by the CLI.
    hint: str | None = None

    def diagnostics(self) -> str:
        """Text for a human: the message, then a hint on what to do, if there is one."""
        text = str(self) or type(self).__name__
        return f"{text}\n  hint: {self.hint}" if self.hint else text


class UsageError(PpmlError):
    """Bad arguments or configuration."""

    exit_code = 2


class UnknownScheme(UsageError):
    """A URI whose scheme names no registered backend."""

    def __init__(self, uri: str, known: list[str]) -> None:
        self.uri = uri
        self.known = known
        super().__init__(f"unknown scheme in {uri!r}")
        self.hint = "known schemes: " + ", ".join(sorted(known))


class GramineNotInstalled(UsageError):
    """``gramine-sgx`` is not on ``PATH`` where a job was to start under it: nothing was started."""

    def __init__(self, app: str, hint: str) -> None:
        self.app = app
        super().__init__(f"--tee sgx-gramine starts {app} under gramine-sgx, which is not installed here "
                         "(not on PATH); nothing was started")
        self.hint = hint


class InputError(PpmlError):
    """A path cannot be used as asked."""

    exit_code = 3

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class InputNotFound(InputError):
    def __init__(self, path: Path | str) -> None:
        super().__init__(path, "no such file or directory")


class NotAFile(InputError):
    def __init__(self, path: Path | str, reason: str = "is a directory, expected a file") -> None:
        super().__init__(path, reason)


class OutputExists(InputError):
    def __init__(self, path: Path | str) -> None:
        super().__init__(path, "already exists")
        self.hint = "choose another output path or pass --force to replace it"


class OutputDirectoryMissing(InputError):
    """The directory an output would be written into does not exist (ppml creates no parents:
    a typo in a path should not silently grow a tree)."""

    def __init__(self, directory: Path | str) -> None:
        super().__init__(directory, "output directory does not exist")
        self.args = (f"output directory {directory} does not exist",)
        self.hint = f"create it with: mkdir -p {shlex.quote(str(directory))}"


class NotAnEncryptedModel(InputError):
    """A model path that holds no ppml model manifest: a plaintext model, or one whose save
    never finished (the manifest is written last, so a killed save leaves none)."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(path, "not an encrypted ppml model (no encrypted manifest)")
        self.hint = (
            "a model saved by ppml.ml.save has a manifest.ppml; to load a plaintext model "
            "anyway, pass plaintext=True (it is then not protected)"
        )


class InvalidCiphertext(PpmlError):
    """The data could not be authenticated or parsed.

    Deliberately opaque: a wrong key, a flipped bit, a truncation, reordered segments and a
    malformed header all look the same, so the error is no oracle for an attacker.
    """

    exit_code = 4

    def __init__(self, source: Path | str | None = None) -> None:
        self.source = str(source) if source is not None else None
        where = f"{self.source}: " if self.source else ""
        super().__init__(f"{where}cannot decrypt: wrong key, or the data was altered or truncated")


class NotAnEnvelope(InvalidCiphertext):
    """The input does not start with ppml's magic bytes; it is not a ppml file."""

    def __init__(self, source: Path | str | None = None) -> None:
        super().__init__(source)
        where = f"{self.source}: " if self.source else ""
        self.args = (f"{where}not a ppml encrypted file (no PPML header)",)
        self.hint = (
            "for BigDL PPML files pass --mode AES/CBC/PKCS5Padding; "
            "a plaintext file needs no decryption"
        )


class MalformedHeData(InvalidCiphertext):
    """Bytes meant as a homomorphic-encryption public key or ciphertext do not parse: wrong version,
    a length out of bounds, a value outside its group, or a ciphertext under another key."""

    def __init__(self, what: str = "homomorphic-encryption data") -> None:
        super().__init__()
        self.what = what
        self.args = (f"malformed {what}",)


class FederatedLearningError(PpmlError):
    """A federated-learning computation (HE arithmetic, a protocol round) cannot go on."""

    exit_code = 9


class PlaintextOverflow(FederatedLearningError):
    """A value lies outside the range the HE fixed-point encoding can represent.

    Raised on encoding (the input is too large) and on decoding (a homomorphic sum or product
    wrapped around the modulus), so an overflow is an error instead of a silently wrong number.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"homomorphic-encryption overflow: {reason}")
        self.hint = "scale the values down, use fewer fraction bits, or a larger key"


class HeKeyMismatch(FederatedLearningError):
    """Operands encrypted under different public keys, or decryption without the secret key."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class RoundAborted(FederatedLearningError):
    """A federated round stopped before it finished: a party disconnected, refused a message or
    failed. Every party sees the same reason, and none of them writes output."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"federated round aborted: {reason}")


class MalformedModel(FederatedLearningError):
    """Bytes meant as a federated model share (a vertical-LR party's weights) do not parse: wrong
    format name or version, a missing field, a non-finite weight."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"not a federated model: {reason}")


class WeakLegacyKey(PpmlError):
    """A BigDL legacy key that gives no real protection (all-zero or zero-padded)."""

    exit_code = 5

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"refusing a weak BigDL legacy key: {reason}")
        self.hint = (
            "re-encrypt the data with ppml's envelope format; to read it once anyway, pass "
            "--unsafe-allow-weak-legacy-keys"
        )


class AttestationFailed(PpmlError):
    """Evidence, a policy match or a token was rejected. ``reason`` says which check failed:
    unlike ciphertext, attestation failures are meant to be diagnosed by operators."""

    exit_code = 8

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"attestation failed: {reason}")


class QuoteFormatError(AttestationFailed):
    """The evidence is malformed, truncated, oversized or of an unsupported version."""


class PolicyNotFound(AttestationFailed):
    def __init__(self, policy_id: str) -> None:
        self.policy_id = policy_id
        super().__init__(f"no policy {policy_id!r}")


class NonceRejected(AttestationFailed):
    """The nonce is unknown, expired or was already used."""


class TokenRejected(AttestationFailed):
    """An attestation token failed verification or does not satisfy what was asked of it."""


class CoordinatorNotAttested(AttestationFailed):
    """A party refused the FL coordinator before sending anything: no token, a token that does not
    verify or names another policy, or a binding to the TLS connection that does not check out."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the FL coordinator is not attested: {reason}")


class KeyServiceError(PpmlError):
    """A key service (local store or remote KMS) failed."""

    exit_code = 6


class KeyNotFound(KeyServiceError):
    """No key with this id that the caller may use (unknown, or another tenant's)."""

    def __init__(self, key_id: str, kms: str | None = None) -> None:
        self.key_id = key_id
        self.kms = kms
        where = f" in {kms}" if kms else ""
        super().__init__(f"no key {key_id!r}{where}")
        self.hint = "check --kms: the key must be in the key service the data was encrypted with"


class KeyStoreUnreadable(KeyServiceError):
    """The key store or one of its key files cannot be read or is malformed."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"key store {path}: {reason}")


class KeyDisabled(KeyServiceError):
    """The key exists and belongs to the caller but is disabled or scheduled for deletion."""

    def __init__(self, key_id: str, state: str) -> None:
        self.key_id = key_id
        self.state = state
        super().__init__(f"key {key_id!r} is {state}")


class RootKeyMismatch(KeyServiceError):
    """The database's records were sealed under a different root key than the one supplied."""

    def __init__(self, where: str) -> None:
        super().__init__(f"the root key does not open {where}: refusing to start")
        self.hint = "start with the root key (file or passphrase) this database was created with"


class AuthenticationFailed(KeyServiceError):
    """The caller could not be authenticated (unknown app, wrong signature or apikey)."""


class ReplayedRequest(AuthenticationFailed):
    """The request's timestamp or nonce was used before, or lies outside the accepted window."""


class PermissionDenied(KeyServiceError):
    """The caller is authenticated but may not perform this operation."""


class ServiceUnavailable(PpmlError):
    """A service (the KMS, the attestation service) or its storage cannot be reached, or answered
    with a server error. The neutral name for a fault every service shares."""

    exit_code = 6

    def __init__(self, service: str, reason: str) -> None:
        self.service = service
        self.reason = reason
        super().__init__(f"{service} unavailable: {reason}")


class RequestRejected(PpmlError):
    """A service refused the request as malformed or out of bounds (the neutral name)."""

    exit_code = 6


class KmsRequestRejected(KeyServiceError, RequestRejected):
    """The key service refused the request as malformed or out of bounds."""


class InvalidPeerMessage(RequestRejected):
    """A federated-learning peer's message was refused: bad framing or length, a point that is not
    in the prime-order group, a failed authentication or a protocol mode mismatch (says which)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"refusing a peer message: {reason}")


class KmsUnavailable(KeyServiceError, ServiceUnavailable):
    """The key service cannot be reached or answered with a server error."""

    def __init__(self, kms: str, reason: str) -> None:
        ServiceUnavailable.__init__(self, kms, reason)

    @property
    def kms(self) -> str:
        return self.service


class UnsafeWarning(UserWarning):
    """Emitted every time an explicitly unsafe option or legacy mode is used."""
