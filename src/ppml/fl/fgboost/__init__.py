"""FGBoost: SecureBoost-style vertical gradient-boosted trees under Paillier encryption.

The rows are already aligned (PSI); the **label party** (active) holds some columns and the labels
and the Paillier secret key; each **passive party** holds other columns only. Roles are functions of
a :class:`~ppml.fl.channel.Channel` (threads over a LocalHub, or processes over the FL service).
Model and binning: :mod:`ppml.fl.fgboost.model`; packing and process workers:
:mod:`ppml.fl.fgboost.packing`; the roles: :mod:`ppml.fl.fgboost.protocol`.

Protocol (L = label party, P = each passive party; ``[[x]]`` = x under L's Paillier key; message
kinds in quotes)::

    setup     L → P  "fgb.public_key"  the public key;  "fgb.setup"  JSON: rows, trees, depth, bins, key bits
              P → L  "fgb.features"    JSON {"features": its column count}
    per tree  L: g, h from the current margins (log loss or squared error), quantised and packed
              into one plaintext per row (below), encrypted with obfuscators precomputed in worker
              processes while the previous tree was built
              L → P  "fgb.request" {"op": "tree"}  then  "fgb.gh"  [[pack(g_i, h_i)]] for every row
    per node  (breadth first, nodes above max_depth with H ≥ 2·min_child_weight)
              L → P  "fgb.request" {"op": "histogram", node}  then  "fgb.rows"  the node's row indices
              P → L  "fgb.hist"   Π_{i in node, bin_f(i) = b} [[pack_i]]  for each own column f, bin b
              L: decrypts each bin once (G and H together), checks each column's bins add up to the
              node's exact totals, computes its own histograms in the clear and takes the best
              XGBoost gain over every party's columns
              if the best split is P's column f at bin b:
              L → P  "fgb.request" {"op": "split", node, feature f, bin b}
              P: records (f, threshold) in its lookup table → split id
              P → L  "fgb.split" {"split_id"}  and  "fgb.left"  the left child's row indices
              (L checks the left rows are within the node and their H is the split's H_L)
    end       L → P  "fgb.request" {"op": "end"}
    predict   L → P  {"op": "predict", rows};  per tree level, for the rows standing at P's splits:
              L → P  {"op": "directions", split_ids, counts} and "fgb.rows";  P → L  "fgb.directions" (1 = left)

Packing (details and the bound in :mod:`ppml.fl.fgboost.packing`): g and h become F = 40-bit fixed
point integers g_i (signed) and v_i ≥ 1; with an offset K making u_i = g_i + K·v_i ≥ 0, the
plaintext is ``u_i · 2^B_h + v_i``, B_h and B_u wide enough for the sum over all rows. A decrypted bin
sum S gives H = S mod 2^B_h and G = (S >> B_h) − K·H. The label party checks B_h + B_u against the
key before encrypting and raises PlaintextOverflow if rows × magnitude does not fit.

What each party learns (semi-honest parties):

- a **passive party** sees the public key, ciphertexts, the row set of every node the label party
  histograms (SecureBoost's standard leakage of instance spaces), the splits chosen on its own
  columns (and so their left/right row sets) and, at prediction, which rows reach its splits;
  never a label, a gradient or another party's column;
- the **label party** sees, per node, the aggregated G and H of every bin of every passive column
  (which bounds how the passive party's rows are ordered along that column), the passive parties'
  column counts and the left row sets of their splits; never their thresholds or raw values.

Every received message is checked (JSON fields, array shapes and index ranges, ciphertexts parsed
under the key with 0 < c < n² and gcd(c, n) = 1, histogram sums that must add up exactly) and a bad
one raises a ppml error that aborts the round at every party.
"""

from __future__ import annotations

from ppml.fl.fgboost.model import FORMAT, LabelModel, PassiveModel, TreeNode, bin_features, open_model, seal_model
from ppml.fl.fgboost.packing import FRACTION_BITS, GhPacking
from ppml.fl.fgboost.protocol import (
    FgboostConfig,
    LabelTrainingResult,
    PaillierStats,
    PassiveTrainingResult,
    label_predict,
    label_train,
    passive_predict,
    passive_train,
)

__all__ = [
    "FORMAT",
    "FRACTION_BITS",
    "FgboostConfig",
    "GhPacking",
    "LabelModel",
    "LabelTrainingResult",
    "PaillierStats",
    "PassiveModel",
    "PassiveTrainingResult",
    "TreeNode",
    "bin_features",
    "label_predict",
    "label_train",
    "open_model",
    "passive_predict",
    "passive_train",
    "seal_model",
]
