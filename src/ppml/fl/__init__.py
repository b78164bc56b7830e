"""Trusted federated learning: homomorphic encryption for gradients (PSI, vertical FL and FGBoost grow here).

Needs ``pip install ppml[fl]`` (gmpy2 for Paillier).
"""
