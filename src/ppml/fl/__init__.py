"""Trusted federated learning: private set intersection (``ppml.fl.psi``), homomorphic encryption
for gradients (``ppml.fl.he``) and vertical logistic/linear regression over them (``ppml.fl.vfl``);
the FL service and FGBoost grow here.

Needs ``pip install ppml[fl]`` (gmpy2 for Paillier and the PSI hash, PyNaCl for the PSI replies' XChaCha20-Poly1305).
"""
