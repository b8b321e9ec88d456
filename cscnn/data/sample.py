"""Synthetic impression logs and an ad catalogue with real images, for demos and tests.

The generating process (everything is drawn from one ``numpy.random.Generator(seed)``, so the
same arguments give the same bytes):

Catalogue
  * ``K`` categories with ids ``1..K``. Each ad has a category (uniform), a brand (one of three
    per category), 3 title words (two from its category's word pool, one generic), a
    popularity weight ``~ Pareto(1.2)`` (so a long tail of rarely shown, *cold* ads exists),
    and an image.
  * The image (``S x S`` RGB PNG) is a textured grey background with four filled discs, one
    in each quadrant, each of a colour drawn independently (red, green, blue or yellow).
  * Over it, ``overlays`` small squares (side ``S // 16``, at least 1 pixel), each in one of
    the same four colours, at uniform positions, over the background and the discs alike: the
    price tags, stickers, logos and text that real creatives carry. They are the same for every
    category and carry no click signal; a model has to see the product past them. They are
    drawn from a random stream of their own, so everything else (impressions, clicks, the
    discs and the background under the overlays) is the same for every ``overlays``, and
    ``overlays = 0`` gives the images and CSV files of versions without this option.
  * With ``category_backgrounds``, the background's mean grey is the category's own (evenly
    spaced from 80 for the first category to 176 for the last, instead of 128 for all): the
    studio look that a category's product photos share, so that an image shows its category,
    as real ones do. The discs, the click effect and everything else are unchanged (the same
    random draws, shifted), and the option is off by default.

Category-specific visual effect (what CSCNN exists to capture)
  * Every category ``k`` has a key quadrant ``q*_k`` and a preferred colour ``c*_k`` (drawn
    once, so that neighbouring categories differ). An ad's visual effect on the click logit is
    ``visual_strength * ([colour of the disc in q*_k == c*_k] - 1/4)``: what sells in category
    k is the colour of the object at the place where that category's creatives put the product
    (think shoes at the bottom, hats at the top); the other three discs are decoration.
    The same image can be attractive in one category and neutral in another, and the colours
    present in an image say little on their own: a model has to look at the right place for
    the ad's category. ``visual.json`` records ``q*_k`` and ``c*_k`` as ground truth.

Users and context
  * Users have a city (10), an age bucket (6) and an affinity ``a_uk ~ N(0, 1)`` for each
    category. ``clicked_categories`` holds 3-5 categories drawn from ``softmax(a_u)``.
  * Every impression has an intent category drawn from ``softmax(a_u)``; with probability 0.7
    the ad shown is from that category (by popularity), otherwise any ad. ``query_words`` are
    2-3 words from the intent category's pool.
  * ``hour`` follows a day-shaped distribution, ``weekday`` is uniform. Each category has a peak
    hour ``p_k`` and a weekend effect ``w_k ~ U(-0.4, 0.4)``.

Click
  ``logit = -1.6 + 0.8 a_u[k] + 0.6 [k == intent] + 0.5 cos(2 pi (hour - p_k) / 24)
  + w_k [weekday >= 5] + brand_k + visual(ad) + N(0, 0.3)``, ``label ~ Bernoulli(sigmoid(logit))``.
  So clicks depend on user-category interest, context, and category-specific visual properties.

Files written under ``--out``
  ``impressions/impressions.csv`` (header = ``DEFAULT_SPEC.raw_columns``), ``ads/ads.csv``
  (``ad_id,category_id,brand_id,title_words,image``), ``images/<ad_id>.png``,
  ``visual.json`` (the generating parameters and the visual ground truth).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from typing import Dict, Sequence

import numpy as np

from spec.features import DEFAULT_SPEC

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40)}
QUADRANTS = ("top_left", "top_right", "bottom_left", "bottom_right")
CITIES = 10
AGE_BUCKETS = 6
BRANDS_PER_CATEGORY = 3
WORDS_PER_CATEGORY = 8


@dataclasses.dataclass(frozen=True)
class SampleConfig:
  impressions: int = 60000
  ads: int = 3000
  categories: int = 6
  users: int = 500
  image_size: int = 32
  visual_strength: float = 2.0
  overlays: int = 0
  category_backgrounds: bool = False
  seed: int = 0

  def __post_init__(self):
    for name in ("impressions", "ads", "categories", "users"):
      if getattr(self, name) < 1:
        raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
    if self.overlays < 0:
      raise ValueError(f"--overlays must be >= 0, got {self.overlays}")
    if self.image_size < 8:
      raise ValueError(f"--image-size must be >= 8, got {self.image_size}")


def _softmax(x: np.ndarray) -> np.ndarray:
  e = np.exp(x - x.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


BACKGROUND = 128.0   # mean grey of every background, unless category_backgrounds


def background_level(category: int, categories: int) -> float:
  """The mean grey of category ``category``'s (0-based) backgrounds with
  ``category_backgrounds``: evenly spaced from 80 (first category) to 176 (last)."""
  return 80.0 + 96.0 * category / max(categories - 1, 1)


def render_image(colours: Sequence[str], size: int, rng: np.random.Generator,
                 background: float = BACKGROUND) -> np.ndarray:
  """An S x S x 3 uint8 image: textured grey background of mean ``background`` and one disc per
  quadrant, the disc in ``QUADRANTS[q]`` filled with ``colours[q]``."""
  if len(colours) != len(QUADRANTS):
    raise ValueError(f"need one colour per quadrant ({len(QUADRANTS)}), got {len(colours)}")
  img = rng.normal(background, 18, size=(size, size, 1)).clip(0, 255) * np.ones((1, 1, 3))
  yy, xx = np.mgrid[0:size, 0:size]
  r = size * 0.16
  for qi, colour in enumerate(colours):
    cy = size * (0.27 if qi < 2 else 0.73)
    cx = size * (0.27 if qi % 2 == 0 else 0.73)
    img[(yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 <= r * r] = COLOURS[colour]
  return img.round().astype(np.uint8)


def add_overlays(img: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
  """Draws ``count`` squares of side ``S // 16`` (at least 1) in random palette colours at
  random places over `img` (discs included) and returns it."""
  size = img.shape[0]
  side = max(1, size // 16)
  palette = np.array(list(COLOURS.values()), np.uint8)
  corners = rng.integers(0, size - side + 1, size=(count, 2))
  fills = rng.integers(0, len(palette), size=count)
  for (y, x), c in zip(corners, fills):
    img[y:y + side, x:x + side] = palette[c]
  return img


def encode_png(img: np.ndarray) -> bytes:
  from PIL import Image  # imported lazily: the CLI's other commands do not need Pillow
  buf = io.BytesIO()
  Image.fromarray(img, mode="RGB").save(buf, format="PNG", optimize=False, compress_level=6)
  return buf.getvalue()


def generate(cfg: SampleConfig, out_dir: str, log=print) -> Dict[str, object]:
  """Writes the sample data set to `out_dir`; returns a summary dict."""
  rng = np.random.default_rng(cfg.seed)
  overlay_rng = np.random.default_rng([cfg.seed, 1])   # its own stream: overlays change nothing else
  K, M, U, N, S = cfg.categories, cfg.ads, cfg.users, cfg.impressions, cfg.image_size
  colours = list(COLOURS)

  # Category-level parameters. Preferred colour / quadrant cycle through a random order so
  # that categories differ as much as the 4 x 4 combinations allow.
  colour_order = rng.permutation(len(colours))
  quadrant_order = rng.permutation(len(QUADRANTS))
  pref_colour = np.array([colour_order[k % len(colours)] for k in range(K)])
  pref_quadrant = np.array([quadrant_order[(k + k // len(QUADRANTS)) % len(QUADRANTS)] for k in range(K)])
  peak_hour = rng.uniform(0, 24, size=K)
  weekend = rng.uniform(-0.4, 0.4, size=K)
  brand_effect = rng.normal(0, 0.3, size=(K, BRANDS_PER_CATEGORY))
  category_words = [[f"w{k + 1}_{j}" for j in range(WORDS_PER_CATEGORY)] for k in range(K)]
  generic_words = [f"g{j}" for j in range(20)]

  # Ads.
  ad_cat = rng.integers(0, K, size=M)
  ad_brand = rng.integers(0, BRANDS_PER_CATEGORY, size=M)
  ad_colours = rng.integers(0, len(colours), size=(M, len(QUADRANTS)))   # disc colour per quadrant
  ad_pop = rng.pareto(1.2, size=M) + 0.05
  key_colour = ad_colours[np.arange(M), pref_quadrant[ad_cat]]
  ad_visual = cfg.visual_strength * ((key_colour == pref_colour[ad_cat]) - 1 / len(colours))
  ad_ids = [f"ad{i:05d}" for i in range(M)]
  ad_titles = []
  for i in range(M):
    words = list(rng.choice(category_words[ad_cat[i]], size=2, replace=False))
    words.append(str(rng.choice(generic_words)))
    ad_titles.append(" ".join(words))

  # Users.
  user_city = rng.integers(0, CITIES, size=U)
  user_age = rng.integers(0, AGE_BUCKETS, size=U)
  affinity = rng.normal(0, 1, size=(U, K))
  user_pref = _softmax(affinity)

  # Impressions (vectorised).
  u = rng.integers(0, U, size=N)
  cum_pref = user_pref[u].cumsum(axis=1)
  intent = np.minimum((rng.random(N)[:, None] > cum_pref).sum(axis=1), K - 1)
  ads_of_cat = [np.flatnonzero(ad_cat == k) for k in range(K)]
  all_p = ad_pop / ad_pop.sum()
  from_intent = rng.random(N) < 0.7
  ad = rng.choice(M, size=N, p=all_p)
  for k in range(K):
    idx = np.flatnonzero(from_intent & (intent == k))
    if len(idx) and len(ads_of_cat[k]):
      p = ad_pop[ads_of_cat[k]] / ad_pop[ads_of_cat[k]].sum()
      ad[idx] = rng.choice(ads_of_cat[k], size=len(idx), p=p)
  k_of = ad_cat[ad]
  hour_p = _softmax(-((np.arange(24) - 15.0) ** 2) / 40.0 + 0.0)
  hour = rng.choice(24, size=N, p=0.8 * hour_p + 0.2 / 24)
  weekday = rng.integers(0, 7, size=N)
  logit = (-1.6 + 0.8 * affinity[u, k_of] + 0.6 * (k_of == intent)
           + 0.5 * np.cos(2 * np.pi * (hour - peak_hour[k_of]) / 24)
           + weekend[k_of] * (weekday >= 5) + brand_effect[k_of, ad_brand[ad]]
           + ad_visual[ad] + rng.normal(0, 0.3, size=N))
  label = (rng.random(N) < 1 / (1 + np.exp(-logit))).astype(int)

  os.makedirs(os.path.join(out_dir, "impressions"), exist_ok=True)
  os.makedirs(os.path.join(out_dir, "ads"), exist_ok=True)
  os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)

  imp_path = os.path.join(out_dir, "impressions", "impressions.csv")
  with open(imp_path, "w", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(DEFAULT_SPEC.raw_columns)
    for i in range(N):
      n_q = 2 + int(rng.integers(0, 2))
      query = " ".join(rng.choice(category_words[intent[i]], size=n_q, replace=False))
      n_c = 3 + int(rng.integers(0, 3))
      clicked = " ".join(str(c + 1) for c in
                         np.minimum((rng.random(n_c)[:, None] > cum_pref[i]).sum(axis=1), K - 1))
      row = {
          "label": label[i], "user_id": f"u{u[i]:05d}", "user_city": f"city{user_city[u[i]]}",
          "user_age": int(user_age[u[i]]), "ad_id": ad_ids[ad[i]], "category_id": int(k_of[i] + 1),
          "brand_id": f"b{k_of[i] + 1}_{ad_brand[ad[i]]}", "hour": int(hour[i]),
          "weekday": int(weekday[i]), "query_words": query, "title_words": ad_titles[ad[i]],
          "clicked_categories": clicked,
      }
      w.writerow([row[c] for c in DEFAULT_SPEC.raw_columns])

  with open(os.path.join(out_dir, "ads", "ads.csv"), "w", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(["ad_id", "category_id", "brand_id", "title_words", "image"])
    for i in range(M):
      background = background_level(ad_cat[i], K) if cfg.category_backgrounds else BACKGROUND
      img = render_image([colours[c] for c in ad_colours[i]], S, rng, background)
      if cfg.overlays:
        img = add_overlays(img, cfg.overlays, overlay_rng)
      rel = f"images/{ad_ids[i]}.png"
      with open(os.path.join(out_dir, rel), "wb") as g:
        g.write(encode_png(img))
      w.writerow([ad_ids[i], int(ad_cat[i] + 1), f"b{ad_cat[i] + 1}_{ad_brand[i]}", ad_titles[i], rel])

  shown = np.bincount(ad, minlength=M)
  summary = {
      "config": dataclasses.asdict(cfg),
      "impressions": N, "ads": M, "clicks": int(label.sum()), "ctr": round(float(label.mean()), 4),
      "ads_shown": int((shown > 0).sum()), "cold_ads_lt5": int(((shown > 0) & (shown < 5)).sum()),
      "visual_preferences": {
          str(k + 1): {"colour": colours[pref_colour[k]], "quadrant": QUADRANTS[pref_quadrant[k]]}
          for k in range(K)},
  }
  with open(os.path.join(out_dir, "visual.json"), "w") as f:
    json.dump(summary, f, indent=1, sort_keys=True)
    f.write("\n")
  log(f"wrote {N} impressions ({summary['clicks']} clicks, CTR {summary['ctr']}) and {M} ads "
      f"with {S}x{S} PNG images to {out_dir}")
  return summary
