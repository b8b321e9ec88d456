"""Pipeline-wide constants and defaults: paths, budgets and gating thresholds.

The data contract and the lists of choices live in `spec/`; model defaults in `models/`."""

from spec.choices import LAYOUT_FLAT, LAYOUT_PRE_SPLIT, INPUT_LAYOUTS  # noqa: F401  (re-exported)

PIPELINE_NAME = "cscnn-ctr"     # Kubeflow wants [a-z0-9-]
MODEL_NAME = "cscnn_ctr"

# ExampleGen input layouts (spec.choices.INPUT_LAYOUTS; `input_check.input_splits` decides):
# flat <data>/impressions/*.csv, hash-split 4:1; pre-split impressions/train|eval/*.csv as they are.
IMPRESSIONS_PATTERN = "impressions/*.csv"
TRAIN_EVAL_BUCKETS = (4, 1)
TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"
TRAIN_PATTERN = "impressions/train/*.csv"
EVAL_PATTERN = "impressions/eval/*.csv"

# Ad catalogue, relative to the data root (its columns: components/ad_catalog.py).
CATALOG_PATH = "ads/ads.csv"
IMPRESSIONS_PER_AD = 10         # G: up to G impressions of one ad share a batch (paper: 25)

# `pipeline run --target-attention`: the ad's category attends over the user's clicked categories.
TARGET_ATTENTION = ("category_id", "clicked_categories")

# Trainer.
TRAIN_STEPS = 1800              # ~9.6 passes over the sample's 48k training rows: the image variants need
                                # them to learn the visual effect from clicks (docs/design-notes.md)
EVAL_STEPS = 50
PRETRAIN_STEPS = 300            # CataloguePretrain's batches (visual init catalogue; models/pretrain.py)
TRAIN_BATCH_SIZE = 256
EVAL_BATCH_SIZE = 512

# Evaluator gating: an absolute AUC floor on the overall slice, and no AUC regression larger
# than AUC_TOLERANCE against the latest blessed model.
AUC_FLOOR = 0.60
AUC_TOLERANCE = 0.01
# ... and its per-user AUC (eq. 13) must be at least the best heuristic baseline's (BaselineGen:
# popularity, the user's category affinity, item-to-item co-occurrence, their blend) plus this.
BASELINE_MARGIN = 0.001
BASELINE_NEIGHBORS = 50
