"""Can the CTR model learn "the candidate's category is among the user's past categories"?

A unit-size synthetic task (issue: why the trained ranker loses to counting): K categories,
each impression has a candidate category c (uniform) and a history of H distinct categories;
the label is 1 exactly when c is in the history. Everything else the model sees is noise-free,
so a model that can express the rule reaches AUC 1. Trains the paper's DCN (d_e = 4, the
candidate as a categorical feature, the history as a mean-pooled multi-valued feature) with and
without target attention (`models.layers.TargetAttention`) on the same rows and prints the
held-out AUC after each epoch, for several seeds:

    bin/env python scripts/diagnose_history_match.py [--categories 20] [--history 5] [--seeds 3]
"""

import argparse
import json
import sys
import time

import numpy as np


def make_rows(n: int, categories: int, history: int, rng: np.random.Generator):
  """Transformed ids as the pipeline gives them: category id in [0, K), history ids in [1, K]
  (0 = padding), label = candidate in history."""
  cand = rng.integers(0, categories, size=n)
  hist = np.stack([rng.choice(categories, size=history, replace=False) for _ in range(n)])
  # half the rows draw the candidate from the history, so the classes are balanced
  take = rng.random(n) < 0.5
  cand = np.where(take, hist[np.arange(n), rng.integers(0, history, size=n)], cand)
  label = (hist == cand[:, None]).any(axis=1).astype(np.float32)
  return {"category_id_xf": cand.astype(np.int64), "clicked_categories_xf": (hist + 1).astype(np.int64)}, label


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--categories", type=int, default=20, help="K")
  ap.add_argument("--history", type=int, default=5, help="categories in each history")
  ap.add_argument("--rows", type=int, default=20000, help="training rows (and a quarter of that held out)")
  ap.add_argument("--epochs", type=int, default=5)
  ap.add_argument("--seeds", type=int, default=3)
  ap.add_argument("--json", action="store_true")
  args = ap.parse_args(argv)

  import keras  # pylint: disable=import-outside-toplevel
  from sklearn.metrics import roc_auc_score  # pylint: disable=import-outside-toplevel
  from models.dcn import DCNConfig, build_ctr_model  # pylint: disable=import-outside-toplevel
  from spec.features import CATEGORICAL, MULTI, Feature  # pylint: disable=import-outside-toplevel

  features = (Feature("category_id", CATEGORICAL, int),
              Feature("clicked_categories", MULTI, str, max_len=args.history))
  id_space = {"category_id": args.categories, "clicked_categories": args.categories + 1}
  configs = {"dcn": DCNConfig(),
             "dcn + target attention": DCNConfig(target_attention=(("category_id", "clicked_categories"),))}
  results = {name: [] for name in configs}
  for seed in range(args.seeds):
    rng = np.random.default_rng(seed)
    x, y = make_rows(args.rows, args.categories, args.history, rng)
    xv, yv = make_rows(args.rows // 4, args.categories, args.history, rng)
    for name, cfg in configs.items():
      keras.utils.set_random_seed(seed)
      model = build_ctr_model(features, id_space, cfg)
      t0 = time.time()
      curve = []
      for _ in range(args.epochs):
        model.fit(x, y, batch_size=256, epochs=1, verbose=0)
        curve.append(float(roc_auc_score(yv, np.asarray(model.predict(xv, batch_size=4096, verbose=0)).ravel())))
      results[name].append(curve)
      print(f"seed {seed} {name:<24} held-out AUC per epoch: {' '.join(f'{a:.4f}' for a in curve)}"
            f"  ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
  summary = {name: {"final_auc_mean": float(np.mean([c[-1] for c in curves])),
                    "final_auc_std": float(np.std([c[-1] for c in curves], ddof=1)) if len(curves) > 1 else 0.0,
                    "curves": curves} for name, curves in results.items()}
  if args.json:
    print(json.dumps({"args": vars(args), "results": summary}, indent=1))
  else:
    print(f"K = {args.categories} categories, history of {args.history}, {args.rows} rows, {args.epochs} epochs, "
          f"d_e = 4, {args.seeds} seeds")
    for name, s in summary.items():
      print(f"  {name:<24} held-out AUC {s['final_auc_mean']:.4f} ± {s['final_auc_std']:.4f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
