"""Example applications that use several of ppml's integrations at once (Spark and ML): each is a
script run inside the TEE by ``ppml submit``, and ``ppml example NAME`` runs it end to end.

The SimpleQuery example stays in :mod:`ppml.spark.examples` (it needs Spark alone).
"""
