"""Key management: the ``KeyManagementService`` Protocol and its implementations."""

from ppml.kms.local import LocalKeyStore
from ppml.kms.protocol import KeyManagementService

__all__ = ["KeyManagementService", "LocalKeyStore"]
