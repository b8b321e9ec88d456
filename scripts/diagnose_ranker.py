"""Why the trained ranker loses to counting: the DCN trained in-process on a pre-split data set
(e.g. `cscnn data movielens`), its train and eval per-user AUC (eq. 13) after every epoch,
beside the heuristic baselines of `models.baselines` on the same rows.

One knob per run, the rest as the pipeline's DCN without its history match (the features of
`spec.features` but the CSV's clicked_ads, which --history-ads builds here; d_e = 4,
1024-512-256 deep part, 3 cross layers, Adam 1e-3, batch 256, point-wise log loss):

    bin/env python scripts/diagnose_ranker.py --data /tmp/ml [--id-dim 16] [--ad-min-count 1]
        [--statistics] [--dropout 0.3] [--epochs 3] [--seed 0]

  --id-dim D        d_e of the user and ad ids (the others keep 4)
  --ad-min-count N  ads with fewer training rows share one id (the pipeline: 20)
  --statistics      the baselines' leave-one-out counts as four more inputs (standardised)
  --dropout P       dropout on x_nv
  --history-ads L   per row, L of the user's other training positives (the row's own ad left out),
                    pooled into x_nv by --history-pool attention (DIN's unit) or dot (FISM's
                    candidate . mean-history, what the pipeline's HistoryMatch does), tables of
                    --history-dim; --history-query ad_id scores the candidate by its ad-id
                    vocabulary (--ad-min-count) instead of the history's
  --drop F [F ...]  leave these categorical features out (e.g. user_id)
  --weight-decay W  AdamW's decoupled weight decay instead of Adam

Ids are exact vocabularies of the training split (0 = unknown), as Transform makes them. The
training negatives are the data set's (`cscnn data movielens --negatives K`). Prints the
baselines' eval per-user AUC (`models.baselines`, fitted on the training rows), then one line
per epoch: train per-user AUC (on up to 2,000 training users' rows), eval per-user AUC.
"""

import argparse
import sys
import time

import numpy as np
import pandas as pd

CATEGORICAL = ("user_id", "user_city", "user_age", "ad_id", "category_id", "brand_id")


def history_ads(tr, ev, length, seed):
  """Per row, up to `length` of the user's training positives (ids into a vocabulary of all
  training ads, 0 = padding), the row's own ad left out of a training positive's history."""
  pos = tr[tr.label == 1]
  vocab = {a: i + 1 for i, a in enumerate(sorted(pos.ad_id.astype(str).unique()))}
  rng = np.random.default_rng(seed)
  per_user = {}
  for u, g in pos.groupby("user_id"):
    ads = g.ad_id.astype(str).values.copy()
    rng.shuffle(ads)
    per_user[u] = [vocab[a] for a in ads[:length + 1]]

  def rows(df, leave_out):
    out = np.zeros((len(df), length), np.int64)
    for i, (u, a, y) in enumerate(zip(df.user_id.values, df.ad_id.astype(str).values, df.label.values)):
      h = per_user.get(u, [])
      if leave_out and y == 1 and vocab.get(a) in h[:length]:
        h = [x for x in h if x != vocab[a]]
      h = h[:length]
      out[i, :len(h)] = h
    return out

  cand = lambda df: df.ad_id.astype(str).map(vocab).fillna(0).astype(np.int64).values  # noqa: E731
  return rows(tr, True), rows(ev, False), cand(tr), cand(ev), len(vocab) + 1


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--data", required=True, help="a pre-split data folder (impressions/train, impressions/eval)")
  ap.add_argument("--id-dim", type=int, default=4)
  ap.add_argument("--ad-min-count", type=int, default=20)
  ap.add_argument("--statistics", action="store_true")
  ap.add_argument("--dropout", type=float, default=0.0)
  ap.add_argument("--history-ads", type=int, default=0)
  ap.add_argument("--history-dim", type=int, default=8)
  ap.add_argument("--history-pool", choices=("attention", "dot"), default="attention")
  ap.add_argument("--l2", type=float, default=0.0, help="L2 on the id embeddings (per looked-up row)")
  ap.add_argument("--drop", nargs="*", default=(), choices=CATEGORICAL, help="leave these features out")
  ap.add_argument("--weight-decay", type=float, default=0.0, help="AdamW's decoupled weight decay")
  ap.add_argument("--history-query", choices=("ad_id", "candidate_ad"), default="candidate_ad",
                  help="the dot's candidate ids: ad_id's vocabulary (--ad-min-count) or the history's")
  ap.add_argument("--epochs", type=int, default=3)
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args(argv)

  import keras  # pylint: disable=import-outside-toplevel
  from models import baselines as B  # pylint: disable=import-outside-toplevel
  from tfx_pipeline.metrics import mean_user_auc  # pylint: disable=import-outside-toplevel
  from models.layers import CrossNet, PooledEmbedding, TargetAttention  # pylint: disable=import-outside-toplevel

  keras.utils.set_random_seed(args.seed)
  tr = pd.read_csv(f"{args.data}/impressions/train/impressions.csv")
  ev = pd.read_csv(f"{args.data}/impressions/eval/impressions.csv")
  vocab = {}
  for c in CATEGORICAL:
    counts = tr[c].astype(str).value_counts()
    keep = sorted(counts[counts >= (args.ad_min_count if c == "ad_id" else 1)].index)
    vocab[c] = {k: i + 1 for i, k in enumerate(keep)}
  cats = sorted({t for s in tr.clicked_categories.astype(str) for t in s.split()})
  cat_vocab = {k: i + 1 for i, k in enumerate(cats)}

  def encode(df):
    x = {c: df[c].astype(str).map(vocab[c]).fillna(0).astype(np.int64).values for c in CATEGORICAL}
    hist = np.zeros((len(df), 5), np.int64)
    for i, s in enumerate(df.clicked_categories.astype(str)):
      ids = [cat_vocab.get(t, 0) for t in s.split()][:5]
      hist[i, :len(ids)] = ids
    x["clicked_categories"] = hist
    return x

  xtr, xev = encode(tr), encode(ev)
  if args.history_ads:
    (xtr["clicked_ads"], xev["clicked_ads"], xtr["candidate_ad"], xev["candidate_ad"],
     n_hist) = history_ads(tr, ev, args.history_ads, args.seed)
  users = pd.Index(sorted(set(tr.user_id)))
  ads = pd.Index(sorted(set(tr.ad_id) | set(ev.ad_id)))
  cats_ix = pd.Index(sorted(set(tr.category_id) | set(ev.category_id)))
  ids = lambda df: (users.get_indexer(df.user_id), ads.get_indexer(df.ad_id).astype(np.int64) + 1,  # noqa: E731
                    cats_ix.get_indexer(df.category_id))
  tables = B.fit_baselines(*ids(tr), tr.label.values, len(users), len(cats_ix))
  c_ev = B.counts_numpy(tables, *ids(ev))
  top = tables.ad_positives.max()
  scores = {k: np.asarray(B.score(k, c_ev, tables.blend_weights, top)) for k in B.KINDS}
  print("baselines, eval per-user AUC: " + ", ".join(
      f"{k} {mean_user_auc(ev.user_id.values, ev.label.values, scores[k]):.4f}" for k in B.KINDS), flush=True)
  if args.statistics:
    for x, df, loo in ((xtr, tr, True), (xev, ev, False)):
      c = B.counts_numpy(tables, *ids(df), labels=df.label.values if loo else None)
      x["statistics"] = B.blend_inputs(c).astype(np.float32)
    mean, std = xtr["statistics"].mean(0), xtr["statistics"].std(0) + 1e-6
    for x in (xtr, xev):
      x["statistics"] = (x["statistics"] - mean) / std

  inputs = {k: keras.Input(v.shape[1:], dtype=v.dtype, name=k) for k, v in xtr.items()}
  parts = [keras.layers.Embedding(len(vocab[c]) + 1, args.id_dim if c in ("user_id", "ad_id") else 4)(inputs[c])
           for c in CATEGORICAL if c not in args.drop]
  parts.append(PooledEmbedding(len(cat_vocab) + 1, 4, padding_id=0)(inputs["clicked_categories"]))
  if args.statistics:
    parts.append(inputs["statistics"])
  if args.history_ads:
    if args.history_pool == "attention":
      parts.append(TargetAttention(n_hist, n_hist, dim=args.history_dim, padding_id=0)(
          (inputs["candidate_ad"], inputs["clicked_ads"])))
    else:
      q_vocab = n_hist if args.history_query == "candidate_ad" else len(vocab["ad_id"]) + 1
      q = keras.layers.Embedding(q_vocab, args.history_dim)(inputs[args.history_query])
      k = PooledEmbedding(n_hist, args.history_dim, padding_id=0)(inputs["clicked_ads"])
      parts += [k, keras.layers.Dot(axes=1)([q, k])]
  x = keras.layers.Concatenate()(parts)
  if args.dropout:
    x = keras.layers.Dropout(args.dropout)(x)
  h = x
  for units in (1024, 512, 256):
    h = keras.layers.Dense(units, activation="relu")(h)
  o = keras.layers.Dense(128, activation="relu")(keras.layers.Concatenate()([h, CrossNet(3)(x)]))
  model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(o))
  model.compile(keras.optimizers.AdamW(1e-3, weight_decay=args.weight_decay) if args.weight_decay
                else keras.optimizers.Adam(1e-3), "binary_crossentropy")

  rng = np.random.default_rng(args.seed)
  some = set(rng.choice(tr.user_id.unique(), size=min(2000, tr.user_id.nunique()), replace=False))
  probe = tr.user_id.isin(some).values
  print(f"{args.data}: {len(tr):,} training rows, {len(ev):,} eval rows; id dim {args.id_dim}, ad min count "
        f"{args.ad_min_count}, statistics {args.statistics}, dropout {args.dropout}, seed {args.seed}", flush=True)
  t0 = time.time()
  for epoch in range(1, args.epochs + 1):
    model.fit(xtr, tr.label.values, batch_size=256, epochs=1, verbose=0, shuffle=True)
    p_tr = model.predict({k: v[probe] for k, v in xtr.items()}, batch_size=4096, verbose=0)[:, 0]
    p_ev = model.predict(xev, batch_size=4096, verbose=0)[:, 0]
    auc_tr = mean_user_auc(tr.user_id.values[probe], tr.label.values[probe], p_tr)
    print(f"epoch {epoch}: train per-user AUC {auc_tr:.4f}"
          f"   eval per-user AUC {mean_user_auc(ev.user_id.values, ev.label.values, p_ev):.4f}"
          f"   ({time.time() - t0:.0f} s)", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
