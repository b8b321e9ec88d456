"""What the ad images add to counting: the heuristic baselines of `models.baselines` on a
pre-split data set, beside the same blend refitted with one more feature, the visual similarity
of the candidate's image to the images of the user's history.

  bin/env python scripts/poster_signal.py --data DATA [--image-size 128] [--thresholds 5,20,40]
      [--features FILE.npz]

Images: EfficientNet-Lite0 with the converted ImageNet weights (`make setup`), the pooled 1280
features of each ad's image of `ads/ads.csv` fitted into S x S as AdCatalogGen does (padded),
centred on the catalogue's mean and L2-normalised: v_a. Visual similarity of a row:
cos(v_a, mean of v_h over the ads h of the row's history sequence) (the spec's sequence read
against the ad id, e.g. MovieLens' `clicked_ads`, the user's other training positives; 0 without
history). `--features` caches the features of the catalogue (computed when the file is absent).

Blend + visual: the blend's logistic regression (`models.baselines.fit_baselines`: the same
leave-one-out counts of the training rows, the same solver and sample) with the visual
similarity as a sixth input. Prints per-user AUC (eq. 13, ties not ordered) and rank AUC on the
rows whose ad has fewer than T training positives, for each T.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def image_features(data: str, size: int, log=print):
  """(ad ids, (N, 1280) pooled ImageNet features) of the catalogue's images as AdCatalogGen
  stores them (padded into size x size; a blank image where one is missing)."""
  from components.ad_catalog import read_catalog_arrays  # pylint: disable=import-outside-toplevel
  from models.attention import AttentionConfig  # pylint: disable=import-outside-toplevel
  from models.backbones import BackboneConfig, build_visual_tower  # pylint: disable=import-outside-toplevel
  from models.efficientnet_lite import NAME  # pylint: disable=import-outside-toplevel
  from models.pretrain import embed, feature_model  # pylint: disable=import-outside-toplevel
  t0 = time.time()
  ids, _, images, _ = read_catalog_arrays(data, size)
  log(f"  {len(ids)} images read in {time.time() - t0:.0f} s", flush=True)
  features = feature_model(build_visual_tower(BackboneConfig(NAME, size, weights="imagenet"), AttentionConfig("none")))
  out, batch, t0 = [], 256, time.time()
  for i in range(0, len(ids), batch):
    out.append(embed(features, images[i:i + batch].astype("float32"), batch))
    done = min(i + batch, len(ids))
    log(f"  features {done}/{len(ids)}, {done / (time.time() - t0):.0f} images/s", flush=True)
  return ids, np.concatenate(out)


def visual_similarity(v: np.ndarray, index: dict, ads: pd.Series, history: pd.Series) -> np.ndarray:
  mean_of = {}
  out = np.zeros(len(ads))
  for i, (ad, h) in enumerate(zip(ads, history.fillna("").astype(str))):
    if h not in mean_of:
      rows = [index[a] for a in h.split() if a in index]
      m = v[rows].mean(axis=0) if rows else np.zeros(v.shape[1])
      mean_of[h] = m / (np.linalg.norm(m) + 1e-12)
    if ad in index:
      out[i] = float(v[index[ad]] @ mean_of[h])
  return out


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--data", required=True, help="a pre-split data folder (e.g. `cscnn data movielens --out`)")
  ap.add_argument("--image-size", type=int, default=128)
  ap.add_argument("--thresholds", default="5,20,40", help="cold slices: ads with fewer training positives")
  ap.add_argument("--features", default=None, help="cache of the catalogue's image features (.npz)")
  args = ap.parse_args(argv)

  from models import baselines as B  # pylint: disable=import-outside-toplevel
  from tfx_pipeline.metrics import mean_user_auc  # pylint: disable=import-outside-toplevel
  from spec.features import DEFAULT_SPEC  # pylint: disable=import-outside-toplevel
  from spec.files import DATA_SPEC_FILE, load  # pylint: disable=import-outside-toplevel
  spec_path = os.path.join(args.data, DATA_SPEC_FILE)
  spec = load(spec_path) if os.path.isfile(spec_path) else DEFAULT_SPEC
  history = next((f.name for f in spec.features if f.kind == "sequence" and f.against in (None, spec.ad)), None)
  if history is None:
    raise SystemExit(f"the spec of {args.data} has no sequence read against {spec.ad}: no history to compare with")
  tr = pd.read_csv(f"{args.data}/impressions/train/impressions.csv", dtype=str)
  ev = pd.read_csv(f"{args.data}/impressions/eval/impressions.csv", dtype=str)
  label = spec.label
  for df in (tr, ev):
    df[label] = df[label].astype(int)

  if args.features and os.path.isfile(args.features):
    cached = np.load(args.features, allow_pickle=False)
    ad_ids, f = cached["ids"].tolist(), cached["features"]
  else:
    print(f"image features at {args.image_size}x{args.image_size}:", flush=True)
    ad_ids, f = image_features(args.data, args.image_size)
    if args.features:
      np.savez(args.features, ids=np.array(ad_ids), features=f)
  v = f - f.mean(axis=0)
  v /= np.linalg.norm(v, axis=1, keepdims=True) + 1e-12
  index = {a: i for i, a in enumerate(ad_ids)}

  users = pd.Index(sorted(set(tr[spec.user])))
  ad_ix = pd.Index(sorted(set(tr[spec.ad]) | set(ev[spec.ad])))
  cat_ix = pd.Index(sorted(set(tr[spec.category]) | set(ev[spec.category])))
  ids = lambda df: (users.get_indexer(df[spec.user]), ad_ix.get_indexer(df[spec.ad]).astype(np.int64) + 1,  # noqa: E731
                    cat_ix.get_indexer(df[spec.category]))
  tables = B.fit_baselines(*ids(tr), tr[label].values, len(users), len(cat_ix))
  c_ev = B.counts_numpy(tables, *ids(ev))
  scores = {k: np.asarray(B.score(k, c_ev, tables.blend_weights, tables.ad_positives.max())) for k in B.KINDS}

  sim_tr = visual_similarity(v, index, tr[spec.ad], tr[history])
  sim_ev = visual_similarity(v, index, ev[spec.ad], ev[history])
  scores["visual similarity"] = sim_ev
  x_tr = np.column_stack([B.blend_inputs(B.counts_numpy(tables, *ids(tr), labels=tr[label].values)), sim_tr])
  w = B.fit_logistic(x_tr, tr[label].values)
  scores["blend + visual"] = np.column_stack([B.blend_inputs(c_ev), sim_ev]) @ w[1:] + w[0]

  from scripts.cold_slices import auc  # pylint: disable=import-outside-toplevel
  positives = tr[tr[label] == 1][spec.ad].value_counts()
  ev_positives = ev[spec.ad].map(positives).fillna(0).values
  thresholds = [int(t) for t in args.thresholds.split(",")]
  y = ev[label].values
  print(f"\n{args.data}: {len(users)} users, {len(tr)} training rows, {len(ev)} eval rows; history `{history}`; "
        f"blend + visual weight of the similarity {w[-1]:+.3f}")
  head = ["scorer", "per-user AUC"]
  head += [f"AUC, < {t} positives ({int(y[ev_positives < t].sum())} pos)" for t in thresholds]
  print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
  for name, s in scores.items():
    cells = [f"{mean_user_auc(ev[spec.user].values, y, s):.4f}"]
    cells += [f"{auc(s[ev_positives < t], y[ev_positives < t]):.4f}" for t in thresholds]
    print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
