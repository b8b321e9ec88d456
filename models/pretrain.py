"""Catalogue pretraining of a backbone tower (no TFX): what every ad catalogue has, its images,
categories and titles, teaches the image encoder before the click loss does.

Three objectives on the tower's pooled features (the input of its ``x_v`` projection), summed:

- category classification: softmax cross-entropy over the catalogue's categories;
- title words: a sigmoid per word over the ``vocab_size`` most frequent title words of the
  training ads (binary cross-entropy summed over the vocabulary and divided by the ad's number
  of words; the biases start at the words' log-odds, so the loss starts at the words' entropy);
- image-title contrast: symmetric InfoNCE between an image embedding (a linear map of the
  features, L2-normalised) and a title embedding (the mean of learned word embeddings of the
  title's in-vocabulary words, L2-normalised) over the batch, with a learned temperature
  (``temperature`` is its start; ``learn_temperature=False`` keeps it fixed). Ads without an
  in-vocabulary word take no part in it.

Training images are augmented per image: horizontal flip, a translation of up to
``image_size // 8`` pixels (reflect padding, then a random crop) and a brightness shift of up
to ``brightness`` of the range.

Ads are split by a hash of ``ad_id`` (SHA-256, so the same ads are held out on every run and
machine): ``holdout`` of them are never trained on and give the metrics: category top-1
accuracy, title-word recall@10 (of an ad's in-vocabulary words, the share among the 10 words
the head ranks highest, averaged over ads with at least one) and image-to-title retrieval
top-1 among the held-out ads (a hit when the retrieved title equals the ad's own).

The reference: a tower of the same architecture with random weights, frozen (batch norm in
inference mode), its features standardised with the training ads' mean and std, and the same
heads fitted with the same losses, augmentation, batches and number of steps. "Pretrained
beats random" then compares encoders, not head budgets.

Only the backbone layers of the returned tower carry what was learned; save them with
``models.backbones.save_backbone_weights``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections import Counter
from typing import Dict, List, Sequence

import keras
import numpy as np
import tensorflow as tf

from models.attention import AttentionConfig
from models.backbones import PROJECTION, BackboneConfig, build_visual_tower
from spec.names import CATEGORY_INPUT, IMAGE_INPUT

RECALL_AT = 10
WEIGHTS_FILE = "backbone.weights.h5"   # in the CataloguePretrain artifact
METRICS_FILE = "metrics.json"


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
  backbone: str = "light"
  image_size: int = 32
  steps: int = 300
  batch_size: int = 64
  learning_rate: float = 2e-3
  seed: int = 0
  holdout: float = 0.2                 # share of ads held out (by a hash of ad_id)
  vocab_size: int = 256                # the most frequent title words of the training ads
  embed_dim: int = 64                  # the contrastive space
  temperature: float = 0.1
  learn_temperature: bool = True
  category_weight: float = 1.0
  words_weight: float = 1.0
  contrastive_weight: float = 1.0
  brightness: float = 0.03            # share of the range (0.1 hid the sample's category backgrounds)
  log_every: int = 50

  def __post_init__(self):
    BackboneConfig(self.backbone, self.image_size)   # validates the backbone and the size
    for name in ("steps", "batch_size", "vocab_size", "embed_dim"):
      if getattr(self, name) < 1:
        raise ValueError(f"pretrain {name} must be >= 1, got {getattr(self, name)}")
    if not 0.0 < self.holdout < 1.0:
      raise ValueError(f"pretrain holdout must be in (0, 1), got {self.holdout}")
    if not self.temperature > 0:
      raise ValueError(f"pretrain temperature must be > 0, got {self.temperature}")


def is_heldout(ad_id: str, holdout: float) -> bool:
  """Whether `ad_id` is in the held-out split: a SHA-256 hash of it, not a random draw."""
  h = int.from_bytes(hashlib.sha256(ad_id.encode()).digest()[:8], "big")
  return h % 10_000 < holdout * 10_000


def word_vocabulary(titles: Sequence[str], size: int) -> List[str]:
  """The `size` most frequent words of `titles` (space-separated), ties broken by the word."""
  counts = Counter(w for t in titles for w in set(t.split()))
  return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size]]


def encode_titles(titles: Sequence[str], vocab: Sequence[str]):
  """(multi-hot float32 [N, V], word ids int32 [N, L] with 1..V for words and 0 for padding)."""
  index = {w: i for i, w in enumerate(vocab)}
  rows = [sorted({index[w] for w in t.split() if w in index}) for t in titles]
  width = max(1, max((len(r) for r in rows), default=1))
  multi = np.zeros((len(titles), len(vocab)), np.float32)
  ids = np.zeros((len(titles), width), np.int32)
  for i, r in enumerate(rows):
    multi[i, r] = 1.0
    ids[i, :len(r)] = np.array(r, np.int32) + 1
  return multi, ids


def augment(images, rng: tf.random.Generator, brightness: float):
  """Per image: horizontal flip, translation by up to S // 8 pixels (reflect), brightness."""
  b, s = tf.shape(images)[0], images.shape[1]
  flip = rng.uniform([b, 1, 1, 1]) < 0.5
  x = tf.where(flip, tf.reverse(images, [2]), images)
  p = max(1, s // 8)
  padded = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="REFLECT")
  offset = rng.uniform([b, 2], 0, 2 * p + 1, dtype=tf.int32)
  rows = offset[:, :1] + tf.range(s)[None]
  cols = offset[:, 1:] + tf.range(s)[None]
  x = tf.gather(padded, rows, axis=1, batch_dims=1)
  x = tf.gather(x, cols, axis=2, batch_dims=1)
  x = x + rng.uniform([b, 1, 1, 1], -brightness, brightness) * 255.0
  return tf.clip_by_value(x, 0.0, 255.0)


def feature_model(tower: keras.Model) -> keras.Model:
  """The tower up to its pooled features (the input of the x_v projection)."""
  return keras.Model(tower.inputs, tower.get_layer(PROJECTION).input, name=f"{tower.name}_features")


class _Heads:
  """The three heads on features of width `dim`."""

  def __init__(self, dim: int, categories: int, vocab: int, cfg: PretrainConfig, word_prior: np.ndarray):
    self.category = keras.layers.Dense(categories, name="category_head")
    p = np.clip(word_prior, 1e-4, 1 - 1e-4)
    self.words = keras.layers.Dense(vocab, name="words_head",
                                    bias_initializer=keras.initializers.Constant(np.log(p / (1 - p))))
    self.image_embed = keras.layers.Dense(cfg.embed_dim, name="image_embed")
    self.word_embed = keras.layers.Embedding(vocab + 1, cfg.embed_dim, name="word_embed")
    for layer in (self.category, self.words, self.image_embed):
      layer.build((None, dim))
    self.word_embed.build((None, None))
    self.log_scale = tf.Variable(np.log(1.0 / cfg.temperature), dtype=tf.float32,
                                 trainable=cfg.learn_temperature, name="log_scale")

  @property
  def variables(self):
    out = [v for layer in (self.category, self.words, self.image_embed, self.word_embed)
           for v in layer.trainable_variables]
    return out + ([self.log_scale] if self.log_scale.trainable else [])

  def image_embedding(self, f):
    return tf.math.l2_normalize(self.image_embed(f), -1)

  def title_embedding(self, word_ids):
    mask = tf.cast(word_ids > 0, tf.float32)[..., None]
    mean = tf.reduce_sum(self.word_embed(word_ids) * mask, 1) / tf.maximum(tf.reduce_sum(mask, 1), 1.0)
    return tf.math.l2_normalize(mean, -1)

  def losses(self, f, categories, multi_hot, word_ids):
    cat = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(categories, self.category(f),
                                                                      from_logits=True))
    n_words = tf.reduce_sum(multi_hot, -1)
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=multi_hot, logits=self.words(f))
    words = tf.reduce_mean(tf.reduce_sum(bce, -1) / tf.maximum(n_words, 1.0))
    has = tf.cast(n_words > 0, tf.float32)
    scale = tf.exp(tf.clip_by_value(self.log_scale, 0.0, np.log(100.0)))
    logits = tf.matmul(self.image_embedding(f), self.title_embedding(word_ids), transpose_b=True) * scale
    # Ads without words are neither anchors nor candidates.
    logits = logits + (1.0 - has)[None, :] * -1e9
    logits_t = tf.transpose(logits) + (1.0 - has)[None, :] * -1e9
    labels = tf.range(tf.shape(f)[0])
    i2t = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    t2i = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits_t)
    contrast = tf.reduce_sum((i2t + t2i) / 2 * has) / tf.maximum(tf.reduce_sum(has), 1.0)
    return cat, words, contrast


@dataclasses.dataclass
class PretrainResult:
  tower: keras.Model              # the pretrained tower (its backbone layers carry the training)
  metrics: Dict[str, object]     # see `pretrain`


def _fit(name: str, features: keras.Model, train_backbone: bool, data, cfg: PretrainConfig,
         num_categories: int, word_prior: np.ndarray, standardize=None):
  """Fits the heads (and the backbone when `train_backbone`) for cfg.steps; returns the heads
  and the training rate."""
  images, cats, multi, ids = data
  heads = _Heads(features.output.shape[-1], num_categories, multi.shape[1], cfg, word_prior)
  variables = heads.variables + (features.trainable_variables if train_backbone else [])
  optimizer = keras.optimizers.Adam(cfg.learning_rate)
  optimizer.build(variables)
  rng = tf.random.Generator.from_seed(cfg.seed)
  mean, std = standardize if standardize is not None else (0.0, 1.0)
  weights = (cfg.category_weight, cfg.words_weight, cfg.contrastive_weight)

  @tf.function
  def step(x, c, m, w):
    x = augment(x, rng, cfg.brightness)
    with tf.GradientTape() as tape:
      f = features({IMAGE_INPUT: x, CATEGORY_INPUT: tf.zeros_like(c)}, training=train_backbone)
      parts = heads.losses((f - mean) / std, c, m, w)
      loss = sum(wt * part for wt, part in zip(weights, parts))
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return parts

  order = np.random.default_rng(cfg.seed)
  n, b = len(images), min(cfg.batch_size, len(images))
  perm, pos = order.permutation(n), 0
  t0 = t_log = time.perf_counter()
  for i in range(1, cfg.steps + 1):
    if pos + b > n:
      perm, pos = order.permutation(n), 0
    idx = perm[pos:pos + b]
    pos += b
    parts = step(tf.constant(images[idx], tf.float32), tf.constant(cats[idx]), tf.constant(multi[idx]),
                 tf.constant(ids[idx]))
    if cfg.log_every and (i % cfg.log_every == 0 or i == cfg.steps):
      now = time.perf_counter()
      rate = (cfg.log_every if i % cfg.log_every == 0 else i % cfg.log_every) / max(now - t_log, 1e-9)
      t_log = now
      logging.info("pretrain %s: step %d/%d, %.1f steps/s, losses category %.3f words %.3f contrast %.3f",
                   name, i, cfg.steps, rate, *(float(p) for p in parts))
  return heads, cfg.steps / max(time.perf_counter() - t0, 1e-9)


def embed(features: keras.Model, images: np.ndarray, batch: int = 256) -> np.ndarray:
  """``features`` (inference mode, category 0) over ``images`` in batches: (N, width)."""
  out = [features({IMAGE_INPUT: tf.constant(images[i:i + batch], tf.float32),
                   CATEGORY_INPUT: tf.zeros((len(images[i:i + batch]),), tf.int64)}, training=False)
         for i in range(0, len(images), batch)]
  return np.concatenate([np.asarray(o) for o in out])


def evaluate(heads: _Heads, f: np.ndarray, cats: np.ndarray, multi: np.ndarray, ids: np.ndarray,
             titles: Sequence[str]) -> Dict[str, float]:
  """Held-out metrics of heads on features `f` (already standardised where the heads expect it)."""
  f = tf.constant(f, tf.float32)
  top1 = float(np.mean(np.argmax(np.asarray(heads.category(f)), -1) == cats))
  scores = np.asarray(heads.words(f))
  top = np.argsort(-scores, axis=-1)[:, :RECALL_AT]
  n_words = multi.sum(-1)
  has = n_words > 0
  hits = np.take_along_axis(multi, top, -1).sum(-1)
  recall = float(np.mean(hits[has] / n_words[has])) if has.any() else float("nan")
  sim = np.array(tf.matmul(heads.image_embedding(f), heads.title_embedding(tf.constant(ids)),
                             transpose_b=True))
  sim[:, ~has] = -np.inf
  best = np.argmax(sim, -1)
  retrieval = float(np.mean([titles[best[i]] == titles[i] for i in np.flatnonzero(has)])) if has.any() \
      else float("nan")
  return {"category_top1": top1, f"title_word_recall_at_{RECALL_AT}": recall,
          "image_title_retrieval_top1": retrieval}


def pretrain(ad_ids: Sequence[str], categories: np.ndarray, images: np.ndarray, titles: Sequence[str],
             cfg: PretrainConfig = PretrainConfig()) -> PretrainResult:
  """Pretrains cfg.backbone on the catalogue (images uint8 [N, S, S, 3], categories any ints,
  titles space-separated words, '' for none) and measures it against random weights.

  ``metrics``: ``pretrained`` and ``random`` (each: held-out category top-1, title-word
  recall@10, image-title retrieval top-1, training steps/s), the chance levels (``chance``:
  the majority category's share of the held-out ads, and the recall@10 of ranking words by
  frequency), ``ads`` (train / held-out counts), ``categories``, ``vocab_size`` and ``config``."""
  images = np.asarray(images)
  if images.shape[1:] != (cfg.image_size, cfg.image_size, 3):
    raise ValueError(f"catalogue images are {images.shape[1:]}, the pretraining expects "
                     f"({cfg.image_size}, {cfg.image_size}, 3)")
  if not len(ad_ids) == len(categories) == len(images) == len(titles):
    raise ValueError("ad_ids, categories, images and titles must have one entry per ad")
  keras.utils.set_random_seed(cfg.seed)
  held = np.array([is_heldout(a, cfg.holdout) for a in ad_ids])
  if held.all() or not held.any():
    raise ValueError(f"{len(ad_ids)} ads give an empty {'training' if held.all() else 'held-out'} split "
                     f"(holdout {cfg.holdout}): the catalogue is too small")
  classes = np.unique(np.asarray(categories))
  cat_ids = np.searchsorted(classes, np.asarray(categories)).astype(np.int64)
  train_titles = [t for t, h in zip(titles, held) if not h]
  vocab = word_vocabulary(train_titles, cfg.vocab_size)
  if not vocab:
    logging.warning("pretrain: the titles have no words; the title objectives have nothing to learn")
    vocab = ["<none>"]
  multi, ids = encode_titles(titles, vocab)
  tr, ho = ~held, held
  train = (images[tr], cat_ids[tr], multi[tr], ids[tr])
  prior = multi[tr].mean(0)

  backbone = BackboneConfig(cfg.backbone, cfg.image_size)
  tower = build_visual_tower(backbone, AttentionConfig("none"), name=f"{cfg.backbone}_pretrain")
  features = feature_model(tower)
  logging.info("pretrain: %d training ads, %d held out, %d categories, %d title words; %s at %dx%d, %d steps",
               tr.sum(), ho.sum(), len(classes), len(vocab), cfg.backbone, cfg.image_size, cfg.image_size,
               cfg.steps)
  heads, rate = _fit("encoder", features, True, train, cfg, len(classes), prior)
  held_titles = [t for t, h in zip(titles, held) if h]
  metrics = {"pretrained": {**evaluate(heads, embed(features, images[ho]), cat_ids[ho], multi[ho], ids[ho],
                                       held_titles), "steps_per_s": rate}}

  random_tower = build_visual_tower(backbone, AttentionConfig("none"), name=f"{cfg.backbone}_random")
  random_features = feature_model(random_tower)
  random_features.trainable = False
  f_train = embed(random_features, images[tr])
  standardize = (f_train.mean(0).astype(np.float32), (f_train.std(0) + 1e-6).astype(np.float32))
  heads_r, rate_r = _fit("random reference", random_features, False, train, cfg, len(classes), prior,
                         standardize)
  f_held = (embed(random_features, images[ho]) - standardize[0]) / standardize[1]
  metrics["random"] = {**evaluate(heads_r, f_held, cat_ids[ho], multi[ho], ids[ho], held_titles),
                       "steps_per_s": rate_r}

  by_freq = np.argsort(-prior)[:RECALL_AT]
  n_words = multi[ho].sum(-1)
  has = n_words > 0
  metrics["chance"] = {
      "category_top1": float(np.bincount(cat_ids[ho]).max() / ho.sum()),
      f"title_word_recall_at_{RECALL_AT}": float(np.mean(multi[ho][has][:, by_freq].sum(-1) / n_words[has]))
      if has.any() else float("nan")}
  metrics.update(ads={"train": int(tr.sum()), "heldout": int(ho.sum())}, categories=len(classes),
                 vocab_size=len(vocab), config=dataclasses.asdict(cfg))
  logging.info("pretrain: held-out category top-1 %.3f (random weights %.3f), title-word recall@%d %.3f "
               "(random %.3f)", metrics["pretrained"]["category_top1"], metrics["random"]["category_top1"],
               RECALL_AT, metrics["pretrained"][f"title_word_recall_at_{RECALL_AT}"],
               metrics["random"][f"title_word_recall_at_{RECALL_AT}"])
  return PretrainResult(tower, metrics)
