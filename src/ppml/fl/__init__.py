"""Trusted federated learning. Every protocol role talks through one :class:`~ppml.fl.channel.Channel`
(``LocalHub`` in one process, or the attested gRPC coordinator of ``ppml.fl.service``): private set
intersection and id alignment (``ppml.fl.psi``, ``ppml.fl.alignment``), homomorphic encryption
(``ppml.fl.he``: Paillier, CKKS), vertical logistic/linear regression (``ppml.fl.vfl``), the split
neural network (``ppml.fl.splitnn``), FGBoost (``ppml.fl.fgboost``) and jobs over a party's
encrypted table (``ppml.fl.jobs``). Manual: docs/fl.md.

Needs ``pip install ppml[fl]`` (grpcio and protobuf for the service, gmpy2 for Paillier and the PSI
hash, PyNaCl for the PSI replies' XChaCha20-Poly1305, TenSEAL for CKKS).
"""
