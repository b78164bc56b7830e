"""Trusted ML: models encrypted at rest, in their library's own format, never pickled.

``ppml.ml.save(model, path, kms=…, key_id=…)`` and ``ppml.ml.load(path, kms=…)`` serve Spark ML
(and ``xgboost.spark``), XGBoost, LightGBM and scikit-learn models; the format is drawn in
:mod:`ppml.ml.format`, the manual is ``docs/ml-models.md``.
"""

from ppml.ml.format import Manifest
from ppml.ml.io import DEFAULT_FAMILIES, family_for, load, save

__all__ = ["DEFAULT_FAMILIES", "Manifest", "family_for", "load", "save"]
