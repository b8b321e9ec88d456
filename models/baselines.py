"""Heuristic rankers that every trained model must beat, as Keras models.

What a few lines of counting over the training split capture, scored per (user, ad, category):

    popularity          log1p(P_a) / log1p(P_max)      P_a: the ad's training positives
    category_affinity   (P_uc + b p_c) / (P_u + b)     the user's share of positives in the ad's
                                                       category, shrunk to the global share p_c
    item_knn            x / (1 + x),  x = sum_{j in H(u)} sim(a, j)
                        H(u): the user's training positives; sim: cosine of the co-occurrence of
                        two ads in users' positive sets, the `neighbors` most similar ads per ad
                        (item-to-item collaborative filtering)
    blend               sigmoid(w . [1, log1p P_a, log1p R_a, log share, log1p x])
                        R_a: the ad's training rows; w fitted by logistic regression on the
                        training rows, each row's features computed without that row itself
                        (leave-one-out counts), so the weights do not reward memorisation

The fitted state is a `BaselineTables` (sorted int64 keys and their counts, found by binary
search as `VisualTable` does: plain tensors, no lookup-table resource). `BaselineScorer` is a
serializable Keras layer that holds them as weights; `build_baseline_model` wraps it in a model
with the CTR model's inputs (``user_id_xf``, ``category_id_xf``, ``image_key``), so a baseline
is exported, served and evaluated through exactly the signatures of a trained model.

Users are identified by their Transform id (training users have exact vocabulary ids), ads by
``image_key`` (a fingerprint of the raw ad id: exact for every ad), categories by their
Transform id.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Mapping, Sequence, Tuple

import keras
import numpy as np
from keras import ops

from spec.features import IMAGE_KEY, FeatureSpec, transformed_name
from spec.names import OUTPUT_KEY

POPULARITY = "popularity"
CATEGORY_AFFINITY = "category_affinity"
ITEM_KNN = "item_knn"
BLEND = "blend"
KINDS: Tuple[str, ...] = (POPULARITY, CATEGORY_AFFINITY, ITEM_KNN, BLEND)
BLEND_FEATURES: Tuple[str, ...] = ("bias", "log1p_ad_positives", "log1p_ad_rows",
                                   "log_category_share", "log1p_knn")
SHRINKAGE = 1.0        # b: pseudo-positives of the global category share in the user's share
NEIGHBORS = 50         # ads kept per ad in the item-to-item similarity


@dataclasses.dataclass
class BaselineTables:
  """Everything the four baselines know, fitted on the training split (see module docstring)."""

  ad_keys: np.ndarray          # int64 [A] sorted image keys
  ad_positives: np.ndarray     # float32 [A]
  ad_rows: np.ndarray          # float32 [A]
  user_positives: np.ndarray   # float32 [U] by user id
  category_prior: np.ndarray   # float32 [C] global share of positives per category id
  uc_keys: np.ndarray          # int64 [M] sorted user * C + category
  uc_positives: np.ndarray     # float32 [M]
  history_keys: np.ndarray     # int64 [H] sorted user * A + ad index, one per (user, positive ad)
  neighbors: np.ndarray        # int64 [A, K] ad indices, -1 = none
  cooccurrence: np.ndarray     # float32 [A, K] users with both the ad and the neighbour as positives
  ad_users: np.ndarray         # float32 [A] users with the ad as a positive
  blend_weights: np.ndarray    # float32 [len(BLEND_FEATURES)]

  @property
  def shape(self) -> Dict[str, int]:
    return {"num_ads": len(self.ad_keys), "num_users": len(self.user_positives),
            "num_categories": len(self.category_prior), "num_user_categories": len(self.uc_keys),
            "num_history": len(self.history_keys), "neighbors": self.neighbors.shape[1]}


def _index(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
  """Positions of `keys` in `sorted_keys`, -1 where absent."""
  if len(sorted_keys) == 0:
    return np.full(len(keys), -1, np.int64)
  pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
  return np.where(sorted_keys[pos] == keys, pos, -1)


def _knn(users: np.ndarray, ads: np.ndarray, num_users: int, num_ads: int,
         k: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Top-k cosine neighbours of every ad over the users' positive sets (no ad is its own):
  (neighbours [A, k], their co-occurrence counts [A, k], users per ad [A])."""
  import scipy.sparse as sp  # pylint: disable=import-outside-toplevel
  x = sp.csr_matrix((np.ones(len(users), np.float32), (users, ads)), shape=(num_users, num_ads))
  x.data[:] = 1.0                                   # a set: repeated positives count once
  co = (x.T @ x).tocsr()
  norm = np.sqrt(np.asarray(co.diagonal(), np.float64))
  neighbors = np.full((num_ads, k), -1, np.int64)
  counts = np.zeros((num_ads, k), np.float32)
  for a in range(num_ads):
    lo, hi = co.indptr[a], co.indptr[a + 1]
    cols, c = co.indices[lo:hi], co.data[lo:hi].astype(np.float64)
    keep = cols != a
    cols, c = cols[keep], c[keep]
    sim = c / (norm[a] * norm[cols])
    if len(cols) > k:
      top = np.argpartition(-sim, k - 1)[:k]
      cols, c, sim = cols[top], c[top], sim[top]
    order = np.lexsort((cols, -sim))
    neighbors[a, :len(cols)] = cols[order]
    counts[a, :len(cols)] = c[order]
  return neighbors, counts, (norm ** 2).astype(np.float32)


def fit_baselines(users: np.ndarray, ad_keys: np.ndarray, categories: np.ndarray,
                  labels: np.ndarray, num_users: int, num_categories: int,
                  neighbors: int = NEIGHBORS, seed: int = 0) -> BaselineTables:
  """Fits every baseline on training rows (transformed user id, image key, category id, label).

  Raises ValueError on empty input, ids outside `num_users` / `num_categories`, or labels
  other than 0 / 1.
  """
  users = np.asarray(users, np.int64).reshape(-1)
  keys = np.asarray(ad_keys, np.int64).reshape(-1)
  cats = np.asarray(categories, np.int64).reshape(-1)
  y = np.asarray(labels).reshape(-1)
  n = len(y)
  if n == 0:
    raise ValueError("no training rows to fit the baselines on")
  if not (len(users) == len(keys) == len(cats) == n):
    raise ValueError(f"users, ad keys, categories and labels differ in length: "
                     f"{len(users)}, {len(keys)}, {len(cats)}, {n}")
  for name, ids, size in (("user", users, num_users), ("category", cats, num_categories)):
    if ids.min() < 0 or ids.max() >= size:
      raise ValueError(f"{name} ids must lie in [0, {size}); got [{ids.min()}, {ids.max()}]")
  if not np.isin(y, (0, 1)).all():
    raise ValueError(f"labels must be 0 or 1; got {sorted(set(np.unique(y).tolist()) - {0, 1})[:5]}")
  y = y.astype(np.float32)
  pos = y > 0

  ad_table, ad_index = np.unique(keys, return_inverse=True)
  num_ads = len(ad_table)
  ad_positives = np.bincount(ad_index, weights=y, minlength=num_ads).astype(np.float32)
  ad_rows = np.bincount(ad_index, minlength=num_ads).astype(np.float32)
  user_positives = np.bincount(users, weights=y, minlength=num_users).astype(np.float32)
  cat_positives = np.bincount(cats, weights=y, minlength=num_categories)
  prior = (cat_positives + 1.0) / (cat_positives.sum() + num_categories)
  uc = users[pos] * num_categories + cats[pos]
  uc_keys, uc_counts = np.unique(uc, return_counts=True)
  history_keys = np.unique(users[pos] * num_ads + ad_index[pos])
  nb, cooc, ad_users = _knn(users[pos], ad_index[pos], num_users, num_ads, max(1, neighbors))

  tables = BaselineTables(
      ad_keys=ad_table.astype(np.int64), ad_positives=ad_positives, ad_rows=ad_rows,
      user_positives=user_positives, category_prior=prior.astype(np.float32),
      uc_keys=uc_keys.astype(np.int64), uc_positives=uc_counts.astype(np.float32),
      history_keys=history_keys.astype(np.int64), neighbors=nb, cooccurrence=cooc, ad_users=ad_users,
      blend_weights=np.zeros(len(BLEND_FEATURES), np.float32))

  # Leave-one-out counts of every training row, then a logistic regression on them.
  x = blend_inputs(counts_numpy(tables, users, keys, cats, labels=y))
  tables.blend_weights = fit_logistic(x, y, seed).astype(np.float32)
  return tables


def blend_inputs(c: Mapping[str, np.ndarray]) -> np.ndarray:
  """The blend's inputs without the bias, (N, 4) float64, from `counts_numpy`'s counts."""
  return np.stack([np.asarray(v, np.float64) for v in blend_features(c)[1:]], axis=1)


def fit_logistic(x: np.ndarray, y: np.ndarray, seed: int = 0, sample: int = 200_000) -> np.ndarray:
  """[intercept, coefficients] of the blend's logistic regression (C = 1) on up to `sample` rows
  drawn with `seed`."""
  from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel
  take = np.random.default_rng(seed).choice(len(y), size=min(len(y), sample), replace=False)
  lr = LogisticRegression(C=1.0, max_iter=500).fit(x[take], np.asarray(y)[take])
  return np.concatenate([lr.intercept_, lr.coef_[0]])


def counts_numpy(t: BaselineTables, users, ad_keys, categories, labels=None) -> Dict[str, np.ndarray]:
  """The per-row counts the scores are made of (numpy twin of `BaselineScorer.counts`).

  With `labels` (rows of the training split), each row's counts leave the row itself out: its
  ad's positives and rows, the user's positives (in the category), and in the co-occurrence of
  a positive row's ad with the user's other positives, the user's own pairs."""
  users = np.asarray(users, np.int64)
  cats = np.clip(np.asarray(categories, np.int64), 0, len(t.category_prior) - 1)
  a = _index(t.ad_keys, np.asarray(ad_keys, np.int64))
  known_user = (users >= 0) & (users < len(t.user_positives))
  u = np.where(known_user, users, 0)
  uc = _index(t.uc_keys, u * len(t.category_prior) + cats)
  nb = t.neighbors[np.maximum(a, 0)]
  member = _index(t.history_keys, u[:, None] * len(t.ad_keys) + nb) >= 0
  member &= (nb >= 0) & (a >= 0)[:, None] & known_user[:, None]
  y = np.zeros(len(users)) if labels is None else np.asarray(labels, np.float64).reshape(-1)
  co = t.cooccurrence[np.maximum(a, 0)] - y[:, None]
  n_a = t.ad_users[np.maximum(a, 0)] - y
  n_j = t.ad_users[np.maximum(nb, 0)] - y[:, None]
  sim = np.where(co > 0, co / np.sqrt(np.maximum(n_a[:, None] * n_j, 1e-12)), 0.0)
  ad = lambda v: np.where(a >= 0, v[np.maximum(a, 0)], 0.0).astype(np.float64)  # noqa: E731
  return {
      "ad_positives": ad(t.ad_positives) - y,
      "ad_rows": ad(t.ad_rows) - (0.0 if labels is None else 1.0),
      "uc_positives": np.where((uc >= 0) & known_user, t.uc_positives[np.maximum(uc, 0)], 0.0) - y,
      "user_positives": np.where(known_user, t.user_positives[u], 0.0).astype(np.float64) - y,
      "prior": t.category_prior[cats].astype(np.float64),
      "knn": (sim * member).sum(axis=1),
  }


def category_share(c: Mapping[str, object]):
  return (c["uc_positives"] + SHRINKAGE * c["prior"]) / (c["user_positives"] + SHRINKAGE)


def blend_features(c: Mapping[str, object]) -> Sequence[object]:
  """[1, log1p P_a, log1p R_a, log share, log1p x] (works on numpy arrays and tensors)."""
  return [ops.ones_like(c["knn"]), ops.log1p(ops.maximum(c["ad_positives"], 0.0)),
          ops.log1p(ops.maximum(c["ad_rows"], 0.0)), ops.log(category_share(c)),
          ops.log1p(c["knn"])]


def score(kind: str, c: Mapping[str, object], blend_weights, max_positives):
  """The baseline's score in [0, 1] from the counts (numpy arrays or tensors); `max_positives`
  is P_max, the most training positives of any ad."""
  if kind == POPULARITY:
    top = ops.cast(max_positives, c["ad_positives"].dtype)
    return ops.log1p(c["ad_positives"]) / ops.log1p(ops.maximum(top, 1.0))
  if kind == CATEGORY_AFFINITY:
    return category_share(c)
  if kind == ITEM_KNN:
    return c["knn"] / (1.0 + c["knn"])
  if kind == BLEND:
    f = blend_features(c)
    return ops.sigmoid(sum(f[i] * blend_weights[i] for i in range(len(BLEND_FEATURES))))
  raise ValueError(f"unknown baseline {kind!r}; known: {', '.join(KINDS)}")


@keras.saving.register_keras_serializable(package="cscnn")
class BaselineScorer(keras.layers.Layer):
  """Call with ``(user id (B,), image key (B,), category id (B,))`` -> score (B, 1) in [0, 1].

  The fitted `BaselineTables` are non-trainable weights (`set_tables`)."""

  def __init__(self, kind: str, num_ads: int, num_users: int, num_categories: int,
               num_user_categories: int, num_history: int, neighbors: int, **kwargs):
    super().__init__(**kwargs)
    if kind not in KINDS:
      raise ValueError(f"unknown baseline {kind!r}; known: {', '.join(KINDS)}")
    sizes = dict(num_ads=num_ads, num_users=num_users, num_categories=num_categories,
                 num_user_categories=num_user_categories, num_history=num_history, neighbors=neighbors)
    for name, v in sizes.items():
      if v < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")
    self.kind = kind
    self.sizes = sizes

  def build(self, input_shape):
    s = self.sizes

    def w(name, shape, dtype="float32"):
      return self.add_weight(name=name, shape=shape, dtype=dtype, trainable=False, initializer="zeros")

    self.ad_keys = w("ad_keys", (s["num_ads"],), "int64")
    self.ad_positives = w("ad_positives", (s["num_ads"],))
    self.ad_rows = w("ad_rows", (s["num_ads"],))
    self.user_positives = w("user_positives", (s["num_users"],))
    self.category_prior = w("category_prior", (s["num_categories"],))
    self.uc_keys = w("uc_keys", (s["num_user_categories"],), "int64")
    self.uc_positives = w("uc_positives", (s["num_user_categories"],))
    self.history_keys = w("history_keys", (s["num_history"],), "int64")
    self.neighbors = w("neighbors", (s["num_ads"], s["neighbors"]), "int64")
    self.cooccurrence = w("cooccurrence", (s["num_ads"], s["neighbors"]))
    self.ad_users = w("ad_users", (s["num_ads"],))
    self.blend_weights = w("blend_weights", (len(BLEND_FEATURES),))
    self.max_positives = w("max_positives", ())

  @staticmethod
  def _find(sorted_keys, keys):
    n = ops.shape(sorted_keys)[0]
    pos = ops.minimum(ops.searchsorted(sorted_keys, keys), n - 1)
    return pos, ops.equal(ops.take(sorted_keys, pos, axis=0), keys)

  def counts(self, user, key, category):
    s = self.sizes
    user = ops.reshape(ops.cast(user, "int64"), (-1,))
    key = ops.reshape(ops.cast(key, "int64"), (-1,))
    cat = ops.clip(ops.reshape(ops.cast(category, "int64"), (-1,)), 0, s["num_categories"] - 1)
    known_user = ops.logical_and(user >= 0, user < s["num_users"])
    u = ops.where(known_user, user, ops.zeros_like(user))
    a, ad_found = self._find(self.ad_keys, key)
    uc, uc_found = self._find(self.uc_keys, u * s["num_categories"] + cat)
    nb = ops.take(self.neighbors, a, axis=0)                                   # [B, K]
    hist = ops.reshape(u[:, None] * s["num_ads"] + nb, (-1,))
    _, member = self._find(self.history_keys, hist)
    member = ops.logical_and(ops.reshape(member, ops.shape(nb)), nb >= 0)
    member = ops.logical_and(member, ops.logical_and(ad_found, known_user)[:, None])
    zero = ops.zeros_like(ops.cast(key, "float32"))
    return {
        "ad_positives": ops.where(ad_found, ops.take(self.ad_positives, a, axis=0), zero),
        "ad_rows": ops.where(ad_found, ops.take(self.ad_rows, a, axis=0), zero),
        "uc_positives": ops.where(ops.logical_and(uc_found, known_user),
                                  ops.take(self.uc_positives, uc, axis=0), zero),
        "user_positives": ops.where(known_user, ops.take(self.user_positives, u, axis=0), zero),
        "prior": ops.take(self.category_prior, cat, axis=0),
        "knn": ops.sum(self._similarity(a, nb) * ops.cast(member, "float32"), axis=1),
    }

  def _similarity(self, a, nb):
    """cos(a, j) = co(a, j) / sqrt(n_a n_j) for the neighbours j of each ad a: [B, K]."""
    co = ops.take(self.cooccurrence, a, axis=0)
    n_a = ops.take(self.ad_users, a, axis=0)[:, None]
    n_j = ops.take(self.ad_users, ops.maximum(nb, 0), axis=0)
    return ops.where(co > 0, co / ops.sqrt(ops.maximum(n_a * n_j, 1e-12)), ops.zeros_like(co))

  def call(self, inputs):
    """The score is computed in float64 and rounded to float32 once: float32 log1p and sigmoid
    differ in the last bit between vectorised and scalar code, so equal counts at two positions
    of a batch would score a hair apart and a tie would be ordered by where TFMA's batching put
    its rows. Rounded once, equal counts give equal scores, which the per-user AUC counts as not
    ordered on every run."""
    user, key, category = inputs
    c = {k: ops.cast(v, "float64") for k, v in self.counts(user, key, category).items()}
    weights = [ops.cast(self.blend_weights[i], "float64") for i in range(len(BLEND_FEATURES))]
    s = score(self.kind, c, weights, ops.cast(self.max_positives, "float64"))
    return ops.reshape(ops.cast(s, "float32"), (-1, 1))

  def compute_output_shape(self, input_shape):
    return (input_shape[0][0], 1)

  def set_tables(self, t: BaselineTables) -> None:
    if t.shape != self.sizes:
      raise ValueError(f"tables of shape {t.shape} do not fit a scorer built for {self.sizes}")
    if not self.built:
      self.build(None)
    for name in ("ad_keys", "ad_positives", "ad_rows", "user_positives", "category_prior", "uc_keys",
                 "uc_positives", "history_keys", "neighbors", "cooccurrence", "ad_users", "blend_weights"):
      getattr(self, name).assign(getattr(t, name))
    self.max_positives.assign(float(t.ad_positives.max()) if len(t.ad_positives) else 1.0)

  def get_config(self):
    return {**super().get_config(), "kind": self.kind, **self.sizes}


def baseline_inputs(spec: FeatureSpec) -> Tuple[str, str, str]:
  """The Transform outputs a baseline reads: the user's id, the ad's image key, the category's id."""
  return transformed_name(spec.user), IMAGE_KEY, transformed_name(spec.category)


def build_baseline_model(kind: str, tables: BaselineTables, spec: FeatureSpec,
                         output_name: str = OUTPUT_KEY) -> keras.Model:
  """A Keras model with the CTR model's input names -> ``{output_name: score (B, 1)}``."""
  names = baseline_inputs(spec)
  inputs = {n: keras.Input((), dtype="int64", name=n) for n in names}
  scorer = BaselineScorer(kind, **tables.shape, name=f"baseline_{kind}")
  y = scorer(tuple(inputs[n] for n in names))
  scorer.set_tables(tables)
  return keras.Model(inputs, {output_name: y}, name=f"baseline_{kind}")
