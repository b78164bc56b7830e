"""Trusted federated learning: private set intersection (``ppml.fl.psi``) and homomorphic encryption
for gradients (``ppml.fl.he``); the FL service, vertical FL and FGBoost grow here.

Needs ``pip install ppml[fl]`` (gmpy2 for Paillier, PyNaCl for the PSI group).
"""
