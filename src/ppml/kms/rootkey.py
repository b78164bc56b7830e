"""Re-export: the root key lives in :mod:`ppml.core.rootkey` (shared by the KMS and the AS)."""

from ppml.core.rootkey import RootKey, canonical, from_passphrase_file, load_or_create_key_file

__all__ = ["RootKey", "canonical", "from_passphrase_file", "load_or_create_key_file"]
