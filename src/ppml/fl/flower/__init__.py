"""Horizontal FL on Flower with SecAgg+, the server side behind ppml's TEE gate.

Flower pins protobuf, cryptography and FastAPI below what ppml's core needs, so it lives in its own
virtual environment (:mod:`ppml.fl.flower.env`, ``ppml fl flower-env``). Modules that import
``flwr`` (:mod:`ppml.fl.flower.apps`) are only ever imported inside that environment; everything
else here runs in ppml's own: SecAgg+ parameters (:mod:`~ppml.fl.flower.params`), the environment,
the SuperLink's attestation and the SuperNode's check of it (:mod:`~ppml.fl.flower.attest`) and the
processes of a deployment (:mod:`~ppml.fl.flower.deployment`). Manual: ``docs/fl.md``.
"""

from ppml.fl.flower.params import SecAggPlusParams

__all__ = ["SecAggPlusParams"]
