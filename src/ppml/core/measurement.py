"""SGX enclave identity: the signing key, MRSIGNER, SIGSTRUCT and the MRENCLAVE measurement.

These are the values an operator registers with the attestation service (DESIGN.md, SimpleQuery
steps 2-3) and that a verified SGX quote reports back:

* ``mr_signer`` = SHA-256 of the signing key's 384-byte modulus in little-endian order, as EINIT
  computes it into SECS.MRSIGNER (Intel SDM Vol. 3D, "EINIT").
* ``mr_enclave`` = the SHA-256 the CPU accumulates while the enclave is built: one 64-byte record
  for ECREATE, one for every EADD, one (plus the 256 data bytes) for every EEXTEND
  (SDM Vol. 3D, "ECREATE", "EADD", "EEXTEND"). :class:`EnclaveMeasurement` computes it off-line,
  exactly as Gramine's ``sgx_sign.py`` does.
* The SIGSTRUCT (:class:`Sigstruct`) is the 1808-byte certificate EINIT checks: an RSA-3072
  (public exponent 3) PKCS#1 v1.5 SHA-256 signature over its two signed regions, with the Q1/Q2
  helper values EINIT uses to verify the signature without a division.

:func:`measure_manifest` is *ppml's own* documented measurement of a Gramine manifest, used where
Gramine is not installed (the simulated TEE); see its docstring for what it is and is not.

Only the standard library and ``cryptography`` are used here (``ppml.core`` layer).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Final, Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ppml.core._files import create_private, require_output_directory
from ppml.errors import (
    AttestationFailed,
    InputNotFound,
    NotAFile,
    OutputExists,
    QuoteFormatError,
    UsageError,
)

__all__ = [
    "DEFAULT_ATTRIBUTE_MASK",
    "DEFAULT_MISC_MASK",
    "MANIFEST_MEASUREMENT_VERSION",
    "PAGE_SIZE",
    "SECINFO_PT_REG",
    "SECINFO_PT_TCS",
    "SECINFO_R",
    "SECINFO_W",
    "SECINFO_X",
    "SGX_FLAGS_DEBUG",
    "SGX_FLAGS_INIT",
    "SGX_FLAGS_MODE64BIT",
    "SGX_RSA_EXPONENT",
    "SGX_RSA_KEY_SIZE",
    "SGX_XFRM_LEGACY",
    "SIGSTRUCT_SIZE",
    "EnclaveMeasurement",
    "SgxAttributes",
    "Sigstruct",
    "enclave_attributes",
    "generate_enclave_key",
    "load_enclave_key",
    "measure_manifest",
    "mr_signer",
    "sign_sigstruct",
    "verify_sigstruct",
    "write_enclave_key",
]

#: SGX accepts exactly this key: RSA with a 3072-bit modulus and public exponent 3 (SDM 3D,
#: SIGSTRUCT: "MODULUS ... keylength=3072 bits", "EXPONENT ... RSA Exponent = 3").
SGX_RSA_KEY_SIZE: Final = 3072
SGX_RSA_EXPONENT: Final = 3
_KEY_BYTES: Final = SGX_RSA_KEY_SIZE // 8

PAGE_SIZE: Final = 4096
_EEXTEND_CHUNK: Final = 256

# SECINFO.FLAGS: permission bits 2:0 and PAGE_TYPE in bits 15:8 (PT_TCS = 1, PT_REG = 2).
SECINFO_R: Final = 0x001
SECINFO_W: Final = 0x002
SECINFO_X: Final = 0x004
SECINFO_PT_TCS: Final = 0x100
SECINFO_PT_REG: Final = 0x200

# SECS.ATTRIBUTES.FLAGS bits and the XFRM bits SGX always requires (x87 and SSE).
SGX_FLAGS_INIT: Final = 0x01
SGX_FLAGS_DEBUG: Final = 0x02
SGX_FLAGS_MODE64BIT: Final = 0x04
SGX_XFRM_LEGACY: Final = 0x03

SIGSTRUCT_SIZE: Final = 1808


# -- the signing key ----------------------------------------------------------------------------


def generate_enclave_key() -> rsa.RSAPrivateKey:
    """A fresh enclave signing key: RSA-3072 with public exponent 3, the only kind SGX accepts."""
    return rsa.generate_private_key(public_exponent=SGX_RSA_EXPONENT, key_size=SGX_RSA_KEY_SIZE)


def write_enclave_key(key: rsa.RSAPrivateKey, path: Path | str) -> None:
    """Write ``key`` as an unencrypted PEM (``BEGIN RSA PRIVATE KEY``, as Gramine and Intel's
    ``sgx_sign`` read it) to a new file with mode 0600.

    The file is created exclusively: an existing file is never replaced.

    Raises:
        OutputExists: ``path`` already exists.
        OutputDirectoryMissing: its directory does not exist.
    """
    _check_sgx_key(key.public_key(), str(path))
    path = Path(path)
    require_output_directory(path)
    pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.TraditionalOpenSSL,
        encryption_algorithm=serialization.NoEncryption(),
    )
    try:
        create_private(path, pem)
    except FileExistsError:
        error = OutputExists(path)
        error.hint = "choose another path: ppml never replaces an enclave signing key"
        raise error from None


def load_enclave_key(path: Path | str) -> rsa.RSAPrivateKey:
    """Read an enclave signing key (unencrypted PEM) and check that SGX can use it.

    Raises:
        InputNotFound: no such file.
        UsageError: not an unencrypted PEM RSA private key, not 3072 bits, or exponent not 3.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputNotFound(path) from None
    except IsADirectoryError:
        raise NotAFile(path) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise UsageError(
            f"{path}: the enclave signing key is encrypted; ppml needs an unencrypted PEM "
            "(keep it on an offline signing machine or in an HSM-backed signing step)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise UsageError(f"{path}: not a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise UsageError(f"{path}: an SGX enclave signing key must be RSA, not {type(key).__name__}")
    _check_sgx_key(key.public_key(), str(path))
    return key


def _check_sgx_key(public_key: rsa.RSAPublicKey, where: str) -> None:
    numbers = public_key.public_numbers()
    if public_key.key_size != SGX_RSA_KEY_SIZE:
        raise UsageError(
            f"{where}: the enclave signing key has {public_key.key_size} bits; SGX requires RSA-3072 "
            "(generate one with `ppml enclave keygen`)"
        )
    if numbers.e != SGX_RSA_EXPONENT:
        raise UsageError(
            f"{where}: the enclave signing key has public exponent {numbers.e}; SGX requires 3 "
            "(generate one with `ppml enclave keygen`)"
        )


def mr_signer(public_key: rsa.RSAPublicKey | rsa.RSAPrivateKey) -> bytes:
    """MRSIGNER for this key: SHA-256 of the 384-byte little-endian modulus, as EINIT computes it.

    Raises:
        UsageError: the modulus does not fit the 384-byte SIGSTRUCT field.
    """
    if isinstance(public_key, rsa.RSAPrivateKey):
        public_key = public_key.public_key()
    modulus = public_key.public_numbers().n
    if modulus.bit_length() > SGX_RSA_KEY_SIZE:
        raise UsageError(f"a {modulus.bit_length()}-bit modulus does not fit SGX's 3072-bit field")
    return hashlib.sha256(modulus.to_bytes(_KEY_BYTES, "little")).digest()


# -- SIGSTRUCT ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SgxAttributes:
    """The 16-byte SGX ATTRIBUTES value: FLAGS (uint64 LE) then XFRM (uint64 LE)."""

    flags: int
    xfrm: int

    def __post_init__(self) -> None:
        for name in ("flags", "xfrm"):
            value = getattr(self, name)
            if not 0 <= value < 1 << 64:
                raise ValueError(f"{name} must be an unsigned 64-bit integer")

    def to_bytes(self) -> bytes:
        return struct.pack("<QQ", self.flags, self.xfrm)

    @classmethod
    def from_bytes(cls, data: bytes) -> SgxAttributes:
        flags, xfrm = struct.unpack("<QQ", data)
        return cls(flags=flags, xfrm=xfrm)


#: The attribute mask Gramine signs with: every FLAGS bit enforced; every XFRM bit except AVX
#: (bit 2), AVX-512 (5-7) and AMX (17-18), which may differ between machines.
DEFAULT_ATTRIBUTE_MASK: Final = SgxAttributes(flags=0xFFFF_FFFF_FFFF_FFFF, xfrm=0xFFFF_FFFF_FFF9_FF1B)
#: Every MISCSELECT bit enforced.
DEFAULT_MISC_MASK: Final = 0xFFFF_FFFF


def enclave_attributes(*, debug: bool) -> SgxAttributes:
    """The ATTRIBUTES a 64-bit enclave is signed with: MODE64BIT, DEBUG only if asked, x87+SSE."""
    flags = SGX_FLAGS_MODE64BIT | (SGX_FLAGS_DEBUG if debug else 0)
    return SgxAttributes(flags=flags, xfrm=SGX_XFRM_LEGACY)


_HEADER: Final = bytes.fromhex("06000000E10000000000010000000000")
_HEADER2: Final = bytes.fromhex("01010000600000006000000001000000")
_VENDOR_INTEL: Final = 0x8086

# (offset, size) of every SIGSTRUCT field, SDM Vol. 3D "Enclave Signature Structure (SIGSTRUCT)".
_F_HEADER = (0, 16)
_F_VENDOR = (16, 4)
_F_DATE = (20, 4)
_F_HEADER2 = (24, 16)
_F_SWDEFINED = (40, 4)
_F_RESERVED1 = (44, 84)
_F_MODULUS = (128, 384)
_F_EXPONENT = (512, 4)
_F_SIGNATURE = (516, 384)
_F_MISCSELECT = (900, 4)
_F_MISCMASK = (904, 4)
_F_RESERVED2 = (908, 4)
_F_ISVFAMILYID = (912, 16)
_F_ATTRIBUTES = (928, 16)
_F_ATTRIBUTEMASK = (944, 16)
_F_ENCLAVEHASH = (960, 32)
_F_RESERVED3 = (992, 16)
_F_ISVEXTPRODID = (1008, 16)
_F_ISVPRODID = (1024, 2)
_F_ISVSVN = (1026, 2)
_F_RESERVED4 = (1028, 12)
_F_Q1 = (1040, 384)
_F_Q2 = (1424, 384)
_SIGNED_REGIONS: Final = ((0, 128), (900, 1028))

DateFormat = Literal["bcd", "binary"]


def _encode_date(date: datetime.date, date_format: DateFormat) -> bytes:
    if date_format == "bcd":
        return struct.pack("<I", int(f"{date.year:04d}{date.month:02d}{date.day:02d}", 16))
    return struct.pack("<HBB", date.year, date.month, date.day)


def _decode_date(raw: bytes) -> tuple[datetime.date, DateFormat]:
    digits = f"{struct.unpack('<I', raw)[0]:08x}"
    if digits.isdigit():
        try:
            return datetime.date(int(digits[:4]), int(digits[4:6]), int(digits[6:])), "bcd"
        except ValueError:
            pass
    year, month, day = struct.unpack("<HBB", raw)
    try:
        return datetime.date(year, month, day), "binary"
    except ValueError:
        raise QuoteFormatError("SIGSTRUCT DATE is neither yyyymmdd BCD nor a binary date") from None


def _span(field: tuple[int, int]) -> slice:
    return slice(field[0], field[0] + field[1])


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Sigstruct:
    """The SGX enclave signature structure (SIGSTRUCT), 1808 bytes, all integers little-endian.

    Layout (Intel SDM Vol. 3D, "Enclave Signature Structure"; S = covered by the signature)::

        offset  size  field            S  value
        ------  ----  ---------------  -  ------------------------------------------------------
             0    16  HEADER           S  06000000E10000000000010000000000 (fixed)
            16     4  VENDOR           S  0 (non-Intel) or 0x8086 (Intel)
            20     4  DATE             S  yyyymmdd in BCD, e.g. 0x20240115 (Gramine writes
                                          binary: uint16 year, uint8 month, uint8 day; both read)
            24    16  HEADER2          S  01010000600000006000000001000000 (fixed)
            40     4  SWDEFINED        S  free for software use
            44    84  reserved         S  zero
           128   384  MODULUS             the signer's RSA-3072 modulus
           512     4  EXPONENT            3
           516   384  SIGNATURE           RSA signature (EMSA-PKCS1-v1_5, SHA-256) over S
           900     4  MISCSELECT       S
           904     4  MISCMASK         S
           908     4  reserved         S  zero
           912    16  ISVFAMILYID      S  (Key Separation and Sharing; zero without KSS)
           928    16  ATTRIBUTES       S  FLAGS uint64 ‖ XFRM uint64
           944    16  ATTRIBUTEMASK    S
           960    32  ENCLAVEHASH      S  MRENCLAVE of the enclave this signs
           992    16  reserved         S  zero
          1008    16  ISVEXTPRODID     S  (KSS; zero without KSS)
          1024     2  ISVPRODID        S
          1026     2  ISVSVN           S
          1028    12  reserved            zero
          1040   384  Q1                  floor(s² / m)
          1424   384  Q2                  floor((s³ − Q1·s·m) / m)

    The signed message is bytes 0..128 followed by bytes 900..1028. There is no version field:
    the layout is the architectural one, fixed by the two constant headers.
    """

    vendor: int = 0
    date: datetime.date
    date_format: DateFormat = "bcd"
    sw_defined: int = 0
    modulus: bytes = dataclasses.field(repr=False)
    exponent: int = SGX_RSA_EXPONENT
    signature: bytes = dataclasses.field(repr=False)
    misc_select: int = 0
    misc_mask: int = DEFAULT_MISC_MASK
    isv_family_id: bytes = bytes(16)
    attributes: SgxAttributes
    attribute_mask: SgxAttributes = DEFAULT_ATTRIBUTE_MASK
    enclave_hash: bytes
    isv_ext_prod_id: bytes = bytes(16)
    isv_prod_id: int
    isv_svn: int
    q1: bytes = dataclasses.field(repr=False)
    q2: bytes = dataclasses.field(repr=False)

    def __post_init__(self) -> None:
        for name, size in (
            ("modulus", _KEY_BYTES), ("signature", _KEY_BYTES), ("q1", _KEY_BYTES),
            ("q2", _KEY_BYTES), ("enclave_hash", 32), ("isv_family_id", 16),
            ("isv_ext_prod_id", 16),
        ):
            if len(getattr(self, name)) != size:
                raise ValueError(f"SIGSTRUCT {name} has {size} bytes")
        for name, bits in (
            ("vendor", 32), ("sw_defined", 32), ("exponent", 32), ("misc_select", 32),
            ("misc_mask", 32), ("isv_prod_id", 16), ("isv_svn", 16),
        ):
            if not 0 <= getattr(self, name) < 1 << bits:
                raise ValueError(f"SIGSTRUCT {name} must be an unsigned {bits}-bit integer")
        if self.date_format not in ("bcd", "binary"):
            raise ValueError("date_format is 'bcd' or 'binary'")

    def to_bytes(self) -> bytes:
        out = bytearray(SIGSTRUCT_SIZE)
        out[_span(_F_HEADER)] = _HEADER
        struct.pack_into("<I", out, _F_VENDOR[0], self.vendor)
        out[_span(_F_DATE)] = _encode_date(self.date, self.date_format)
        out[_span(_F_HEADER2)] = _HEADER2
        struct.pack_into("<I", out, _F_SWDEFINED[0], self.sw_defined)
        out[_span(_F_MODULUS)] = self.modulus
        struct.pack_into("<I", out, _F_EXPONENT[0], self.exponent)
        out[_span(_F_SIGNATURE)] = self.signature
        struct.pack_into("<II", out, _F_MISCSELECT[0], self.misc_select, self.misc_mask)
        out[_span(_F_ISVFAMILYID)] = self.isv_family_id
        out[_span(_F_ATTRIBUTES)] = self.attributes.to_bytes()
        out[_span(_F_ATTRIBUTEMASK)] = self.attribute_mask.to_bytes()
        out[_span(_F_ENCLAVEHASH)] = self.enclave_hash
        out[_span(_F_ISVEXTPRODID)] = self.isv_ext_prod_id
        struct.pack_into("<HH", out, _F_ISVPRODID[0], self.isv_prod_id, self.isv_svn)
        out[_span(_F_Q1)] = self.q1
        out[_span(_F_Q2)] = self.q2
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> Sigstruct:
        """Parse a SIGSTRUCT. Checks its structure only; :func:`verify_sigstruct` checks the
        signature.

        Raises:
            QuoteFormatError: wrong length, wrong headers, non-zero reserved bytes, an exponent
                other than 3, an unknown vendor or an unreadable date.
        """
        if len(data) != SIGSTRUCT_SIZE:
            raise QuoteFormatError(f"a SIGSTRUCT has {SIGSTRUCT_SIZE} bytes, got {len(data)}")
        data = bytes(data)
        if data[_span(_F_HEADER)] != _HEADER or data[_span(_F_HEADER2)] != _HEADER2:
            raise QuoteFormatError("not a SIGSTRUCT: HEADER/HEADER2 do not match the SGX constants")
        for reserved in (_F_RESERVED1, _F_RESERVED2, _F_RESERVED3, _F_RESERVED4):
            if any(data[_span(reserved)]):
                raise QuoteFormatError(f"SIGSTRUCT reserved bytes at offset {reserved[0]} are not zero")
        (vendor,) = struct.unpack_from("<I", data, _F_VENDOR[0])
        if vendor not in (0, _VENDOR_INTEL):
            raise QuoteFormatError(f"SIGSTRUCT VENDOR {vendor:#x} is neither 0 nor 0x8086")
        (exponent,) = struct.unpack_from("<I", data, _F_EXPONENT[0])
        if exponent != SGX_RSA_EXPONENT:
            raise QuoteFormatError(f"SIGSTRUCT EXPONENT is {exponent}; SGX requires 3")
        date, date_format = _decode_date(data[_span(_F_DATE)])
        (sw_defined,) = struct.unpack_from("<I", data, _F_SWDEFINED[0])
        misc_select, misc_mask = struct.unpack_from("<II", data, _F_MISCSELECT[0])
        isv_prod_id, isv_svn = struct.unpack_from("<HH", data, _F_ISVPRODID[0])
        return cls(
            vendor=vendor,
            date=date,
            date_format=date_format,
            sw_defined=sw_defined,
            modulus=data[_span(_F_MODULUS)],
            exponent=exponent,
            signature=data[_span(_F_SIGNATURE)],
            misc_select=misc_select,
            misc_mask=misc_mask,
            isv_family_id=data[_span(_F_ISVFAMILYID)],
            attributes=SgxAttributes.from_bytes(data[_span(_F_ATTRIBUTES)]),
            attribute_mask=SgxAttributes.from_bytes(data[_span(_F_ATTRIBUTEMASK)]),
            enclave_hash=data[_span(_F_ENCLAVEHASH)],
            isv_ext_prod_id=data[_span(_F_ISVEXTPRODID)],
            isv_prod_id=isv_prod_id,
            isv_svn=isv_svn,
            q1=data[_span(_F_Q1)],
            q2=data[_span(_F_Q2)],
        )

    def signed_message(self) -> bytes:
        """The bytes the signature covers: SIGSTRUCT[0:128] ‖ SIGSTRUCT[900:1028]."""
        raw = self.to_bytes()
        return b"".join(raw[start:end] for start, end in _SIGNED_REGIONS)

    @property
    def mr_signer(self) -> bytes:
        """SHA-256 of MODULUS as stored (little-endian): what EINIT writes into MRSIGNER."""
        return hashlib.sha256(self.modulus).digest()


def _q1_q2(signature: int, modulus: int) -> tuple[int, int]:
    square = signature * signature
    q1 = square // modulus
    q2 = (square % modulus) * signature // modulus  # == (s³ − q1·s·m) // m
    return q1, q2


def sign_sigstruct(
    key: rsa.RSAPrivateKey,
    *,
    enclave_hash: bytes,
    isv_prod_id: int,
    isv_svn: int,
    attributes: SgxAttributes,
    date: datetime.date,
    attribute_mask: SgxAttributes = DEFAULT_ATTRIBUTE_MASK,
    misc_select: int = 0,
    misc_mask: int = DEFAULT_MISC_MASK,
    vendor: int = 0,
    sw_defined: int = 0,
    date_format: DateFormat = "bcd",
) -> Sigstruct:
    """Sign an enclave: a SIGSTRUCT for ``enclave_hash`` (MRENCLAVE) under ``key``.

    The signature is RSA-3072 EMSA-PKCS1-v1_5 with SHA-256 over the two signed regions, stored
    little-endian with the modulus, and with Q1/Q2 as EINIT expects them.

    Raises:
        UsageError: ``key`` is not an SGX key (RSA-3072, exponent 3).
    """
    _check_sgx_key(key.public_key(), "signing key")
    numbers = key.public_key().public_numbers()
    unsigned = Sigstruct(
        vendor=vendor,
        date=date,
        date_format=date_format,
        sw_defined=sw_defined,
        modulus=numbers.n.to_bytes(_KEY_BYTES, "little"),
        signature=bytes(_KEY_BYTES),
        misc_select=misc_select,
        misc_mask=misc_mask,
        attributes=attributes,
        attribute_mask=attribute_mask,
        enclave_hash=enclave_hash,
        isv_prod_id=isv_prod_id,
        isv_svn=isv_svn,
        q1=bytes(_KEY_BYTES),
        q2=bytes(_KEY_BYTES),
    )
    signature = int.from_bytes(
        key.sign(unsigned.signed_message(), padding.PKCS1v15(), hashes.SHA256()), "big"
    )
    q1, q2 = _q1_q2(signature, numbers.n)
    return dataclasses.replace(
        unsigned,
        signature=signature.to_bytes(_KEY_BYTES, "little"),
        q1=q1.to_bytes(_KEY_BYTES, "little"),
        q2=q2.to_bytes(_KEY_BYTES, "little"),
    )


def verify_sigstruct(sig: Sigstruct) -> bytes:
    """Check a SIGSTRUCT as EINIT would (key shape, Q1/Q2, RSA signature); return its MRSIGNER.

    Raises:
        AttestationFailed: the key is not RSA-3072/e=3, Q1 or Q2 is wrong, or the signature does
            not verify over the signed regions.
    """
    modulus = int.from_bytes(sig.modulus, "little")
    signature = int.from_bytes(sig.signature, "little")
    if sig.exponent != SGX_RSA_EXPONENT or modulus.bit_length() != SGX_RSA_KEY_SIZE:
        raise AttestationFailed("SIGSTRUCT key is not RSA-3072 with exponent 3")
    if not 0 < signature < modulus:
        raise AttestationFailed("SIGSTRUCT signature is out of range for its modulus")
    q1, q2 = _q1_q2(signature, modulus)
    if sig.q1 != q1.to_bytes(_KEY_BYTES, "little") or sig.q2 != q2.to_bytes(_KEY_BYTES, "little"):
        raise AttestationFailed("SIGSTRUCT Q1/Q2 do not match its signature (EINIT would refuse it)")
    try:
        public_key = rsa.RSAPublicNumbers(SGX_RSA_EXPONENT, modulus).public_key()
        public_key.verify(
            signature.to_bytes(_KEY_BYTES, "big"), sig.signed_message(), padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except (InvalidSignature, ValueError):
        raise AttestationFailed("SIGSTRUCT signature does not verify") from None
    return sig.mr_signer


# -- MRENCLAVE ----------------------------------------------------------------------------------


class EnclaveMeasurement:
    """MRENCLAVE computed off-line, record by record, as the CPU does while an enclave is built.

    Each operation feeds SHA-256 with one 64-byte record (SDM Vol. 3D; the same records as
    Gramine's ``sgx_sign.py`` and Linux's SGX selftest)::

        ECREATE  "ECREATE\\0" ‖ SSAFRAMESIZE uint32 (pages) ‖ SIZE uint64 ‖ 44 zero bytes
        EADD     "EADD\\0\\0\\0\\0" ‖ offset uint64 ‖ SECINFO[0:48] (FLAGS uint64 ‖ 40 zero bytes)
        EEXTEND  "EEXTEND\\0" ‖ offset uint64 ‖ 48 zero bytes, then the 256 data bytes

    Offsets are relative to the enclave base. A page's content is measured only if it is
    EEXTENDed (16 chunks of 256 bytes); an EADDed page that is not extended contributes its
    offset and SECINFO but not its bytes. :meth:`digest` is the value EINIT would put in
    MRENCLAVE.

    The class enforces the ordering the hardware enforces (ECREATE first and once, pages inside
    the enclave, aligned, each EADDed once and before it is extended) and raises ``ValueError``
    otherwise.
    """

    __slots__ = ("_added", "_hash", "_size")

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._size: int | None = None
        self._added: set[int] = set()

    def ecreate(self, size: int, ssa_frame_size: int) -> None:
        """Start the measurement: enclave ``size`` in bytes, SSA frame size in pages."""
        if self._size is not None:
            raise ValueError("ECREATE happens once, first")
        if not 0 < size < 1 << 64 or not 0 < ssa_frame_size < 1 << 32:
            raise ValueError("enclave size and SSA frame size must be positive and in range")
        self._size = size
        self._hash.update(struct.pack("<8sIQ44s", b"ECREATE", ssa_frame_size, size, b""))

    def eadd(self, offset: int, flags: int) -> None:
        """Add the page at ``offset`` with SECINFO.FLAGS ``flags``, e.g.
        ``SECINFO_PT_REG | SECINFO_R``."""
        size = self._created()
        if offset % PAGE_SIZE or not 0 <= offset < size:
            raise ValueError(f"EADD offset {offset:#x} is not a page inside the enclave")
        if offset in self._added:
            raise ValueError(f"EADD of page {offset:#x} twice")
        if not 0 <= flags < 1 << 64:
            raise ValueError("SECINFO.FLAGS is a 64-bit value")
        self._added.add(offset)
        self._hash.update(struct.pack("<8sQQ40s", b"EADD", offset, flags, b""))

    def eextend(self, offset: int, data256: bytes) -> None:
        """Measure 256 bytes of an added page at ``offset``."""
        size = self._created()
        if len(data256) != _EEXTEND_CHUNK:
            raise ValueError("EEXTEND measures exactly 256 bytes")
        if offset % _EEXTEND_CHUNK or not 0 <= offset < size:
            raise ValueError(f"EEXTEND offset {offset:#x} is not a 256-byte chunk inside the enclave")
        if offset - offset % PAGE_SIZE not in self._added:
            raise ValueError(f"EEXTEND of {offset:#x} before its page was EADDed")
        self._hash.update(struct.pack("<8sQ48s", b"EEXTEND", offset, b""))
        self._hash.update(data256)

    def add_page(
        self, offset: int, flags: int, content: bytes | None = None, *, measured: bool = True
    ) -> None:
        """EADD one page and, if ``measured``, EEXTEND all of it (``content`` defaults to zeros)."""
        page = bytes(PAGE_SIZE) if content is None else bytes(content)
        if len(page) != PAGE_SIZE:
            raise ValueError("a page has 4096 bytes")
        self.eadd(offset, flags)
        if measured:
            for chunk in range(0, PAGE_SIZE, _EEXTEND_CHUNK):
                self.eextend(offset + chunk, page[chunk : chunk + _EEXTEND_CHUNK])

    def digest(self) -> bytes:
        """The 32-byte MRENCLAVE of everything measured so far (the value EINIT would finalise)."""
        self._created()
        return self._hash.copy().digest()

    def _created(self) -> int:
        if self._size is None:
            raise ValueError("ECREATE must come first")
        return self._size


#: Version of the layout :func:`measure_manifest` documents. A change of layout is a new version,
#: and every registered simulated mr_enclave changes with it.
MANIFEST_MEASUREMENT_VERSION: Final = 1
_MANIFEST_SSA_FRAME_PAGES: Final = 1


def _pages(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), PAGE_SIZE):
        yield data[start : start + PAGE_SIZE].ljust(PAGE_SIZE, b"\0")


def measure_manifest(manifest_bytes: bytes, *, enclave_size: int, max_threads: int) -> bytes:
    """ppml's documented MRENCLAVE of a Gramine manifest, for machines without Gramine.

    This is **ppml's own measurement**, used by the simulated TEE: the :class:`EnclaveMeasurement`
    algorithm (real SGX records) applied to this fixed layout, version
    :data:`MANIFEST_MEASUREMENT_VERSION` = 1::

        ECREATE   SIZE = enclave_size, SSAFRAMESIZE = 1 page
        offset 0                      the manifest bytes followed by one NUL byte (Gramine's
                                      in-enclave copy is NUL-terminated), zero-padded to whole
                                      pages M; each page: EADD (SECINFO = PT_REG | R) and
                                      16 × EEXTEND
        offset (M + t) · 4096,        one TCS page per thread t = 0 .. max_threads − 1:
          t < max_threads             EADD (SECINFO = PT_TCS) and 16 × EEXTEND of zeros
        MRENCLAVE = the SHA-256 of these records

    So ``mr_enclave`` commits to every byte of the manifest, to the enclave size and to the
    thread count; the manifest's ``sgx.trusted_files`` SHA-256 values in turn commit to every file
    the application loads. It is *not* the MRENCLAVE real SGX hardware would report for the same
    manifest: that also covers Gramine's PAL and LibOS binaries and its exact memory layout
    (TCS, SSA, TLS and stack pages). Where ``gramine-sgx-sign`` is installed, ppml uses its
    MRENCLAVE instead (``ppml.tee.gramine.measure``).

    Raises:
        UsageError: ``enclave_size`` is not a power of two (SGX requires one) or is too small
            for the manifest and the TCS pages, or ``max_threads`` < 1.
    """
    if max_threads < 1:
        raise UsageError("max_threads must be at least 1")
    if enclave_size < 2 * PAGE_SIZE or enclave_size & (enclave_size - 1):
        raise UsageError(f"enclave size {enclave_size} is not a power of two of at least 8 KiB")
    content = bytes(manifest_bytes) + b"\0"
    manifest_pages = -(-len(content) // PAGE_SIZE)
    if (manifest_pages + max_threads) * PAGE_SIZE > enclave_size:
        raise UsageError(
            f"enclave size {enclave_size} is too small for a {len(content)}-byte manifest and "
            f"{max_threads} threads"
        )
    measurement = EnclaveMeasurement()
    measurement.ecreate(enclave_size, _MANIFEST_SSA_FRAME_PAGES)
    offset = 0
    for page in _pages(content):
        measurement.add_page(offset, SECINFO_PT_REG | SECINFO_R, page)
        offset += PAGE_SIZE
    for _ in range(max_threads):
        measurement.add_page(offset, SECINFO_PT_TCS)
        offset += PAGE_SIZE
    return measurement.digest()
