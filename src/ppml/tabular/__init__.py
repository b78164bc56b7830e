"""Spark-free tabular IO over encrypted files, shared by the integrations (``ppml.spark``,
``ppml.torch``, ``ppml.ml``) so each reads the same bytes into the same rows: segment-range
splits of envelope files and the lines each split owns (:mod:`~ppml.tabular.splits`), the
csv/json/text parser on Arrow schemas (:mod:`~ppml.tabular.parse`), Parquet Modular Encryption
with ppml's ``KmsClient`` (:mod:`~ppml.tabular.parquet`) and whole encrypted CSV tables to and
from Arrow (:mod:`~ppml.tabular.tables`). Needs PyArrow (``ppml[spark]`` or ``ppml[dl]``); it
imports neither Spark nor PyTorch."""
