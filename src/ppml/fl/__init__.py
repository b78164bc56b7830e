"""Trusted federated learning (needs ppml[fl])."""
