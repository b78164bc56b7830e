"""Checks shared by the encrypted-model tests (test_ml_models, test_ml_spark): nothing of a saved
model is on disk in the clear."""

from __future__ import annotations

import io
from pathlib import Path

from ppml.core.envelope import MAGIC, EnvelopeHeader
from ppml.ml.format import MANIFEST_NAME

# Signatures of every plaintext format a model can be stored in; none may appear outside encryption.
# The tests' models name their features plantedfeature_*, so a leaked name is found too.
SIGNATURES = [b"PAR1", b"PK\x03\x04", b"tree\nversion", b"learner", b"sparkVersion", b"org.apache.spark",
              b"plantedfeature", b"skops", b"scikit", b"xgboost", b"lightgbm"]
SHORT_SIGNATURES = [b'{"', b"{L", b"{i", b"{U", b"tree"]  # too short for random ciphertext: clear fields only


def assert_no_plaintext(model_dir: Path) -> None:
    """Every file is a ppml envelope whose clear header holds no signature, and no distinctive
    plaintext byte string appears anywhere; names are the format's fixed ones."""
    files = sorted(p for p in model_dir.rglob("*") if p.is_file())
    assert files and files[0].relative_to(model_dir).as_posix().startswith("files/")
    for file in files:
        relative = file.relative_to(model_dir).as_posix()
        assert relative == MANIFEST_NAME or (relative.startswith("files/") and relative.endswith(".ppml"))
        raw = file.read_bytes()
        assert raw[:4] == MAGIC, relative
        parsed, _ = EnvelopeHeader.read_from(io.BytesIO(raw))
        clear_fields = parsed.key_id.encode() + b"\0" + parsed.associated_data  # the rest is ciphertext
        for signature in SIGNATURES + SHORT_SIGNATURES:
            assert signature not in clear_fields, (relative, signature)
        # The key service's URI is the caller's own name (here a path holding the test's name).
        raw = raw.replace(parsed.kms.encode(), b"")
        for signature in SIGNATURES:
            assert signature not in raw, (relative, signature)
