"""ppml: privacy-preserving big data and AI, with data decrypted only inside attested TEEs."""

from ppml.core.envelope import decrypt_file, encrypt_file

__all__ = ["__version__", "decrypt_file", "encrypt_file"]
__version__ = "0.1.0"
