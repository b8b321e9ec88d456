"""The paper's Table 4 in the BPR setting of its section 4.4 and appendix A, on a pre-split data
set with ad images (MovieLens-1M posters from `cscnn data movielens`).

Every row is eq. 12, y(u, a) = alpha + beta_u + beta_a + gamma_u.gamma_a + theta_u.Phi(m_a, k_a),
trained on (u, i, j) triplets with the pair-wise loss of eq. 14: i a training positive of u, j an
ad drawn uniformly from the catalogue among those u has no training positive for, drawn anew each
epoch. The rows differ only in Phi:

  bpr-mf  no Phi (the first four terms)
  vbpr    Phi = a learnt linear map of a frozen encoder's pooled features (the `fixed` tower),
          computed once per ad: the encoder is --visual-init's (catalogue, imagenet or a weights
          file)
  dvbpr   Phi = the CNN trained end to end, no category (the `finetune` tower)
  cbam    + CBAM attention (no category)
  cscnn   + the category-specific attention of the paper (the `cscnn` tower)

The end-to-end rows run the CNN once per unique ad of a batch (positives and negatives
together). Evaluation is eq. 13 on the data's held-out rows (one held-out positive and the
sampled negatives per user): the mean over users of the share of (positive, negative) pairs
ordered correctly, on all users and on the users whose held-out ad is cold (fewer than
`COLD_THRESHOLD` training positives, paper 4.2), and, because few users of a small data set
hold out such an ad, also on those whose held-out ad has fewer than `WIDE_COLD_THRESHOLD`. As in
the paper, each run reports the test AUC of the epoch with the best validation AUC (the data's
``validation/`` rows).
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import logging
import os
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from spec.features import COLD_THRESHOLD
from spec.names import CATEGORY_INPUT, IMAGE_INPUT

WIDE_COLD_THRESHOLD = 20   # the wider cold slice (scripts/cold_slices.py reports 5, 10, 20, 40)
METHODS = ("bpr-mf", "vbpr", "dvbpr", "cbam", "cscnn")
LABELS = {"bpr-mf": "BPR-MF", "vbpr": "VBPR", "dvbpr": "DVBPR", "cbam": "CBAM", "cscnn": "CSCNN (ours)"}
# Table 4's steps: the visual features, learning them end to end, attention, the category prior.
STEPS = (("bpr-mf", "vbpr"), ("vbpr", "dvbpr"), ("bpr-mf", "dvbpr"), ("dvbpr", "cbam"), ("cbam", "cscnn"),
         ("dvbpr", "cscnn"))
TOWER = {"vbpr": "fixed", "dvbpr": "finetune", "cbam": "cbam", "cscnn": "cscnn"}   # models.visual variants
# The paper's pair-wise results (appendix A, Table 9, the loss used here) on Amazon; CBAM is not
# a Table 9 column (the paper's CBAM rows are Table 5's, point-wise).
PAPER_TABLE9 = {
    "Fashion": {"bpr-mf": (0.6278, 0.5514), "vbpr": (0.7479, 0.7319), "dvbpr": (0.7964, 0.7718),
                "cscnn": (0.8157, 0.7941)},
    "Women": {"bpr-mf": (0.6543, 0.5196), "vbpr": (0.7081, 0.6885), "dvbpr": (0.7574, 0.7137),
              "cscnn": (0.7921, 0.7519)},
    "Men": {"bpr-mf": (0.6450, 0.5132), "vbpr": (0.7089, 0.6863), "dvbpr": (0.7410, 0.6923),
            "cscnn": (0.7753, 0.7303)},
}


@dataclasses.dataclass(frozen=True)
class BPRConfig:
  latent_dim: int = 10          # d' of gamma_u, gamma_a (VBPR's K)
  visual_dim: int = 10          # d_v of theta_u and Phi's output (VBPR's K')
  epochs: int = 5
  batch_size: int = 256         # triplets per step
  learning_rate: float = 0.01   # Adam's; BPR-MF on MovieLens at 500 users plateaus in 5 epochs
  l2: float = 1e-4              # lambda of eq. 14: on the batch's embeddings (and theta_u, Phi)
  backbone: str = "light"
  image_size: int = 32
  pretrain_steps: int = 300     # --visual-init catalogue

  def __post_init__(self):
    for name in ("latent_dim", "visual_dim", "epochs", "batch_size", "image_size", "pretrain_steps"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"BPR {name} must be an integer >= 1, got {value!r}")
    if not self.learning_rate > 0 or self.l2 < 0:
      raise ValueError(f"BPR learning_rate must be > 0 and l2 >= 0, got {self.learning_rate}, {self.l2}")


@dataclasses.dataclass
class Interactions:
  """A pre-split data set as integer arrays: users and ads by index (ads in catalogue order)."""
  users: List[str]
  ads: List[str]
  categories: np.ndarray        # (n_ads,) int
  train: np.ndarray             # (n, 2) int: (user, ad) of every training positive
  validation: np.ndarray        # (n, 3) int: (user, ad, label)
  test: np.ndarray              # (n, 3) int: (user, ad, label)
  images: Optional[np.ndarray] = None   # (n_ads, S, S, 3) uint8
  titles: Optional[List[str]] = None

  def cold_at(self, threshold: int) -> np.ndarray:
    """(n_ads,) bool: fewer than `threshold` training positives."""
    return np.bincount(self.train[:, 1], minlength=len(self.ads)) < threshold

  @property
  def cold(self) -> np.ndarray:
    return self.cold_at(COLD_THRESHOLD)


def _rows(paths: Sequence[str], what: str):
  if not paths:
    raise ValueError(f"no {what} CSV: the BPR table needs the pre-split layout "
                     "(impressions/train/*.csv, impressions/eval/*.csv, validation/*.csv)")
  for path in paths:
    with open(path, newline="") as f:
      reader = csv.DictReader(f)
      missing = {"label", "user_id", "ad_id"} - set(reader.fieldnames or ())
      if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
      for line, row in enumerate(reader, start=2):
        yield path, line, row


def read_interactions(data: str, image_size: Optional[int] = None) -> Interactions:
  """The catalogue (``ads/ads.csv``, with images when ``image_size``) and the three splits.
  An impression of an ad the catalogue lacks, or a label other than 0/1, stops with its file
  and line."""
  from components.ad_catalog import read_catalog_arrays  # pylint: disable=import-outside-toplevel
  catalogue = os.path.join(data, "ads", "ads.csv")
  if image_size:
    ads, categories, images, titles = read_catalog_arrays(data, image_size)
  else:
    images = None
    with open(catalogue, newline="") as f:
      rows = list(csv.DictReader(f))
    ads, titles = [r["ad_id"] for r in rows], [r.get("title_words") or "" for r in rows]
    categories = np.array([int(r["category_id"]) for r in rows], dtype=np.int64)
  ad_index = {a: i for i, a in enumerate(ads)}
  users: Dict[str, int] = {}

  def split(paths, what, positives_only=False):
    out = []
    for path, line, row in _rows(paths, what):
      if row["ad_id"] not in ad_index:
        raise ValueError(f"{path}:{line}: ad {row['ad_id']!r} is not in {catalogue}")
      if row["label"] not in ("0", "1"):
        raise ValueError(f"{path}:{line}: label must be 0 or 1, got {row['label']!r}")
      if positives_only and row["label"] == "0":
        continue
      u = users.setdefault(row["user_id"], len(users))
      out.append((u, ad_index[row["ad_id"]], int(row["label"])))
    return np.array(out, dtype=np.int64).reshape(-1, 3)

  def paths(*parts):
    return sorted(glob.glob(os.path.join(data, *parts, "*.csv")))

  train = split(paths("impressions", "train"), "training", positives_only=True)[:, :2]
  test = split(paths("impressions", "eval"), "eval")
  validation = split(paths("validation"), "validation")
  return Interactions(list(users), ads, categories, train, validation, test, images, titles)


def sample_negatives(rng: np.random.Generator, users: np.ndarray, n_ads: int, positive_keys: np.ndarray,
                     tries: int = 20) -> np.ndarray:
  """One ad per user drawn uniformly among the ads that are not the user's training positives.
  ``positive_keys``: sorted ``user * n_ads + ad`` of every training positive."""
  out = rng.integers(0, n_ads, len(users))
  for _ in range(tries):
    keys = users * n_ads + out
    at = np.minimum(np.searchsorted(positive_keys, keys), len(positive_keys) - 1)
    clash = positive_keys[at] == keys
    if not clash.any():
      return out
    out[clash] = rng.integers(0, n_ads, int(clash.sum()))
  raise ValueError("could not draw negatives: some user has a training positive for nearly every ad")


def per_user_auc(rows: np.ndarray, scores: np.ndarray, cold: Optional[np.ndarray] = None):
  """Eq. 13 over ``rows`` (user, ad, label) and their scores: the mean over users of the share of
  (positive, negative) pairs ordered correctly (ties count as wrong, as `user_auc` in the
  pipeline's metrics). With ``cold`` (bool per ad): only users whose held-out positive ads are
  all cold, each against all their negatives. Returns (mean AUC, users averaged)."""
  from tfx_pipeline.metrics import user_auc  # pylint: disable=import-outside-toplevel
  order = np.argsort(rows[:, 0], kind="stable")
  rows, scores = rows[order], scores[order]
  starts = np.flatnonzero(np.r_[True, rows[1:, 0] != rows[:-1, 0]])
  values = []
  for a, b in zip(starts, np.r_[starts[1:], len(rows)]):
    labels = rows[a:b, 2]
    if cold is not None and not (labels.any() and cold[rows[a:b, 1][labels == 1]].all()):
      continue
    value = user_auc(labels, scores[a:b])
    if value is not None:
      values.append(value)
  return (float(np.mean(values)) if values else float("nan")), len(values)


def catalogue_weights(inter: Interactions, cfg: BPRConfig, path: str, log: Callable = logging.info) -> str:
  """Pretrains the backbone on the catalogue (models/pretrain.py: categories, title words,
  image-title contrast) into ``path`` unless it is there; returns ``path``."""
  if os.path.exists(path):
    return path
  from models.backbones import save_backbone_weights  # pylint: disable=import-outside-toplevel
  from models.pretrain import PretrainConfig, pretrain  # pylint: disable=import-outside-toplevel
  result = pretrain(inter.ads, inter.categories, inter.images, inter.titles,
                    PretrainConfig(cfg.backbone, cfg.image_size, cfg.pretrain_steps))
  save_backbone_weights(result.tower, path + ".tmp.weights.h5")
  os.replace(path + ".tmp.weights.h5", path)
  log(f"catalogue pretraining -> {path}: " + json.dumps(
      {k: v for k, v in result.metrics.items() if k != "config"}))
  return path


class _Model:
  """Eq. 12 for a method, scoring (user, ad) index pairs; Phi per unique ad of the call."""

  def __init__(self, method: str, inter: Interactions, cfg: BPRConfig, weights: Optional[str], seed: int):
    import keras  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from models.vbpr import VBPRScore  # pylint: disable=import-outside-toplevel
    keras.utils.set_random_seed(seed)
    n_users, n_ads = len(inter.users), len(inter.ads)
    emb = lambda n, d, name, init="random_normal": keras.layers.Embedding(  # noqa: E731
        n, d, embeddings_initializer=init, name=name)
    self.beta_u, self.beta_a = emb(n_users, 1, "beta_u", "zeros"), emb(n_ads, 1, "beta_a", "zeros")
    self.gamma_u, self.gamma_a = emb(n_users, cfg.latent_dim, "gamma_u"), emb(n_ads, cfg.latent_dim, "gamma_a")
    self.score = VBPRScore(name="score")
    self.layers = [self.beta_u, self.beta_a, self.gamma_u, self.gamma_a, self.score]
    self.phi = None
    if method != "bpr-mf":
      self.theta_u = emb(n_users, cfg.visual_dim, "theta_u")
      self.layers.append(self.theta_u)
      self.phi = self._visual(method, inter, cfg, weights, tf)
    for layer, shape in ((self.beta_u, (None,)), (self.beta_a, (None,)), (self.gamma_u, (None,)),
                         (self.gamma_a, (None,)), (self.score, [(None, 1)] * 2 + [(None, cfg.latent_dim)] * 2)):
      layer.build(shape)
    if self.phi is not None:
      self.theta_u.build((None,))

  def _visual(self, method, inter, cfg, weights, tf):
    import keras  # pylint: disable=import-outside-toplevel
    from models.pretrain import embed, feature_model  # pylint: disable=import-outside-toplevel
    from models.visual import VisualConfig, build_tower  # pylint: disable=import-outside-toplevel
    if inter.images is None:
      raise ValueError(f"{method} needs the ads' images: read the data with image_size")
    vcfg = VisualConfig(variant=TOWER[method], backbone=cfg.backbone, image_size=cfg.image_size,
                        output_dim=cfg.visual_dim, backbone_weights=weights)
    tower = build_tower(vcfg, int(inter.categories.max()) + 1, name=f"{method}_cnn")
    categories = tf.constant(inter.categories)
    if method == "vbpr":      # the frozen features once per ad, then VBPR's learnt map E
      table = tf.constant(embed(feature_model(tower), inter.images))   # the fixed tower reads no category
      project = keras.layers.Dense(cfg.visual_dim, name="E")
      project.build((None, table.shape[1]))
      self.layers.append(project)
      return lambda ads, training: project(tf.gather(table, ads))
    images = tf.constant(inter.images)
    self.layers.append(tower)

    def phi(ads, training):
      unique, index = tf.unique(ads)
      x = tower({IMAGE_INPUT: tf.cast(tf.gather(images, unique), tf.float32),
                 CATEGORY_INPUT: tf.gather(categories, unique)}, training=training)
      return tf.gather(x, index)
    return phi

  @property
  def trainable_variables(self):
    return [v for layer in self.layers for v in layer.trainable_variables]

  def __call__(self, users, ads, training=False):
    """Scores (B,) and the squared norm of the parameters the scores used (for lambda R)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    parts = [self.beta_u(users), self.beta_a(ads), self.gamma_u(users), self.gamma_a(ads)]
    if self.phi is not None:
      parts += [self.theta_u(users), self.phi(ads, training)]
    norm = tf.add_n([tf.reduce_sum(tf.square(p)) for p in parts]) / tf.cast(tf.shape(users)[0], tf.float32)
    return self.score(parts), norm

  def pair(self, users, pos, neg, training=False):
    """y_ui, y_uj of a batch of triplets and the regulariser (squared norms per triplet). One
    call for positives and negatives together: the CNN sees every unique ad of the batch once,
    and its batch norm takes one set of statistics over them, as in evaluation; two calls
    would normalise positives and negatives apart, a difference the CNN could learn from."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    scores, norm = self(tf.concat([users, users], 0), tf.concat([pos, neg], 0), training)
    s_i, s_j = tf.split(scores, 2)
    return s_i, s_j, 2.0 * norm


def _score_rows(model: _Model, rows: np.ndarray, batch: int = 2048) -> np.ndarray:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return np.concatenate([np.asarray(model(tf.constant(rows[i:i + batch, 0]), tf.constant(rows[i:i + batch, 1]))[0])
                         for i in range(0, len(rows), batch)])


def train_and_evaluate(method: str, inter: Interactions, cfg: BPRConfig, seed: int,
                       weights: Optional[str] = None, log: Callable = logging.info) -> Dict:
  """One run: BPR training for cfg.epochs, eq. 13 on validation and test after each epoch; the
  result of the epoch with the best validation AUC (and every epoch's figures)."""
  import keras  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from models.vbpr import bpr_loss  # pylint: disable=import-outside-toplevel
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  if method == "vbpr" and weights is None:
    raise ValueError("vbpr's Phi is a pretrained, frozen encoder: give --visual-init catalogue or a weights file")
  model = _Model(method, inter, cfg, weights, seed)
  variables = model.trainable_variables
  optimizer = keras.optimizers.Adam(cfg.learning_rate)
  optimizer.build(variables)

  @tf.function
  def step(u, i, j):
    with tf.GradientTape() as tape:
      s_i, s_j, norm = model.pair(u, i, j, training=True)
      loss = bpr_loss(None, s_i - s_j) + cfg.l2 * norm
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  rng = np.random.default_rng(seed)
  n_ads = len(inter.ads)
  keys = np.unique(inter.train[:, 0] * n_ads + inter.train[:, 1])
  cold, wide, epochs, t0 = inter.cold, inter.cold_at(WIDE_COLD_THRESHOLD), [], time.perf_counter()
  steps = -(-len(inter.train) // cfg.batch_size)
  for epoch in range(1, cfg.epochs + 1):
    order = rng.permutation(len(inter.train))
    users, pos = inter.train[order, 0], inter.train[order, 1]
    neg = sample_negatives(rng, users, n_ads, keys)
    t_epoch, losses = time.perf_counter(), []
    for s in range(steps):
      sl = slice(s * cfg.batch_size, (s + 1) * cfg.batch_size)
      losses.append(float(step(tf.constant(users[sl]), tf.constant(pos[sl]), tf.constant(neg[sl]))))
      if (s + 1) % 100 == 0:
        log(f"{method} seed {seed} epoch {epoch}: step {s + 1}/{steps}, "
            f"{(s + 1) / (time.perf_counter() - t_epoch):.1f} steps/s, loss {np.mean(losses[-100:]):.4f}")
    val, _ = per_user_auc(inter.validation, _score_rows(model, inter.validation))
    scores = _score_rows(model, inter.test)
    test, n_test = per_user_auc(inter.test, scores)
    test_cold, n_cold = per_user_auc(inter.test, scores, cold)
    test_wide, n_wide = per_user_auc(inter.test, scores, wide)
    epochs.append({"epoch": epoch, "loss": float(np.mean(losses)), "validation_auc": val, "auc": test,
                   "cold_auc": test_cold, "wide_cold_auc": test_wide,
                   "seconds": round(time.perf_counter() - t_epoch, 1)})
    log(f"{method} seed {seed} epoch {epoch}/{cfg.epochs}: loss {epochs[-1]['loss']:.4f}, validation AUC {val:.4f}, "
        f"test AUC {test:.4f}, cold {test_cold:.4f} ({n_cold} users), {epochs[-1]['seconds']:.0f} s")
  best = max(epochs, key=lambda e: e["validation_auc"])
  return {"method": method, "seed": seed, "auc": best["auc"], "cold_auc": best["cold_auc"],
          "wide_cold_auc": best["wide_cold_auc"], "best_epoch": best["epoch"], "users": n_test,
          "cold_users": n_cold, "wide_cold_users": n_wide, "epochs": epochs,
          "wall_time_s": round(time.perf_counter() - t0, 1), "config": dataclasses.asdict(cfg),
          "visual_init": weights}


def run_table(data: str, output: str, methods: Sequence[str] = METHODS, seeds: int = 3,
              cfg: BPRConfig = BPRConfig(), visual_init: str = "catalogue",
              log: Callable = logging.info) -> List[Dict]:
  """Every method x seed (seed-major), each result kept in OUTPUT/cells/<method>_seed<s>.json
  and never recomputed (a finished cell run with another configuration stops the run); then
  OUTPUT/table4.md and .csv over every cell in OUTPUT (so that a later call with more methods
  or seeds completes the same table). Returns this call's results."""
  bad = [m for m in methods if m not in METHODS]
  if bad:
    raise ValueError(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
  visual = any(m != "bpr-mf" for m in methods)
  if "vbpr" in methods and visual_init == "scratch":
    raise ValueError("vbpr's Phi is a pretrained, frozen encoder: --visual-init catalogue or a weights file, "
                     "not scratch")
  inter = read_interactions(data, cfg.image_size if visual else None)
  log(f"{data}: {len(inter.users)} users, {len(inter.ads)} ads, {len(inter.train)} training positives, "
      f"{int(inter.cold.sum())} cold ads")
  os.makedirs(os.path.join(output, "cells"), exist_ok=True)
  weights = None
  if visual and visual_init != "scratch":
    weights = (catalogue_weights(inter, cfg, os.path.join(output, "catalogue.weights.h5"), log)
               if visual_init == "catalogue" else visual_init)
  results = []
  for seed in range(seeds):
    for method in methods:
      path = os.path.join(output, "cells", f"{method}_seed{seed}.json")
      init = None if method == "bpr-mf" else weights
      if os.path.exists(path):
        with open(path) as f:
          result = json.load(f)
        if result["config"] != dataclasses.asdict(cfg) or result["visual_init"] != init:
          raise ValueError(f"{path} was run with another configuration: give this table its own --output")
        log(f"{method} seed {seed}: done before, kept")
      else:
        result = train_and_evaluate(method, inter, cfg, seed, init, log)
        with open(path + ".tmp", "w") as f:
          json.dump(result, f, indent=1)
        os.replace(path + ".tmp", path)
      results.append(result)
  every = []
  for path in sorted(glob.glob(os.path.join(output, "cells", "*.json"))):
    with open(path) as f:
      every.append(json.load(f))
  write_table([r for r in every if r["config"] == dataclasses.asdict(cfg)], output)
  return results


def _mean_std(values) -> str:
  """As the ablation tables print it; NaN (no user in a slice) counts as missing."""
  from cscnn.experiment import _format_mean_std, _mean_std as mean_std  # pylint: disable=import-outside-toplevel
  return _format_mean_std(*mean_std(values))


def _gain_lines(results: List[Dict]) -> List[str]:
  """The steps of STEPS whose two methods both ran: B - A paired by seed, mean ± std."""
  from cscnn.experiment import _format_gain, _mean_std as mean_std, paired_gains  # pylint: disable=import-outside-toplevel
  labelled = [{**r, "label": r["method"]} for r in results]
  have = {r["method"] for r in results}
  lines = []
  for a, b in STEPS:
    if a not in have or b not in have:
      continue
    gains = {k: paired_gains(labelled, a, b, k) for k in ("auc", "cold_auc", "wide_cold_auc")}
    cells = " | ".join(_format_gain(*mean_std(gains[k])) for k in gains)
    lines.append(f"| {LABELS[a]} -> {LABELS[b]} | {len(gains['auc'])} | {cells} | "
                 f"{', '.join('%+.4f' % g for g in gains['auc'])} |")
  if not lines:
    return []
  return ["", "Gains paired by seed (B - A, mean ± std over the seeds both have):", "",
          f"| step | seeds | AUC gain | cold AUC gain | AUC gain, < {WIDE_COLD_THRESHOLD} positives | "
          "AUC gain per seed |", "|---" * 6 + "|"] + lines


def write_table(results: List[Dict], output: str) -> str:
  """OUTPUT/table4.md (mean ± std over seeds, the paper's pair-wise Table 9 beside, then the
  gains of Table 4's steps paired by seed) and OUTPUT/table4.csv (one line per run); returns
  the Markdown."""
  methods = [m for m in METHODS if any(r["method"] == m for r in results)]
  by = {m: [r for r in results if r["method"] == m] for m in methods}
  lines = ["| method | seeds | AUC (mean ± std) | cold AUC (mean ± std) | cold users | "
           f"AUC, < {WIDE_COLD_THRESHOLD} positives | its users | best epochs | "
           + " | ".join(f"paper {d} all / cold" for d in PAPER_TABLE9) + " |",
           "|---" * (8 + len(PAPER_TABLE9)) + "|"]
  for m in methods:
    paper = [("%.4f / %.4f" % PAPER_TABLE9[d][m]) if m in PAPER_TABLE9[d] else "-" for d in PAPER_TABLE9]
    lines.append(f"| {LABELS[m]} | {len(by[m])} | {_mean_std([r['auc'] for r in by[m]])} | "
                 f"{_mean_std([r['cold_auc'] for r in by[m]])} | {by[m][0]['cold_users']} | "
                 f"{_mean_std([r['wide_cold_auc'] for r in by[m]])} | {by[m][0]['wide_cold_users']} | "
                 f"{', '.join(str(r['best_epoch']) for r in by[m])} | " + " | ".join(paper) + " |")
  text = "\n".join(lines + _gain_lines(results)) + "\n"
  with open(os.path.join(output, "table4.md"), "w") as f:
    f.write(text)
  with open(os.path.join(output, "table4.csv"), "w", newline="") as f:
    w = csv.writer(f)
    columns = ["method", "seed", "auc", "cold_auc", "wide_cold_auc", "best_epoch", "users", "cold_users",
               "wide_cold_users", "wall_time_s"]
    w.writerow(columns)
    for r in results:
      w.writerow([r[c] for c in columns])
  return text
