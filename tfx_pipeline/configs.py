"""Pipeline-wide constants and defaults: the one place for names, sizes and thresholds."""

PIPELINE_NAME = "cscnn-ctr"     # Kubeflow wants [a-z0-9-]
MODEL_NAME = "cscnn_ctr"

# ExampleGen input layouts (relative to the data root; `input_check.input_splits` decides):
# - "flat": <data>/impressions/*.csv, hash-split 4:1 into train / eval by ExampleGen;
# - "pre-split": <data>/impressions/train/*.csv and <data>/impressions/eval/*.csv are the
#   train and eval splits as they are (e.g. one held-out interaction per user).
IMPRESSIONS_PATTERN = "impressions/*.csv"
TRAIN_EVAL_BUCKETS = (4, 1)
TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"
TRAIN_PATTERN = "impressions/train/*.csv"
EVAL_PATTERN = "impressions/eval/*.csv"
LAYOUT_FLAT = "flat"
LAYOUT_PRE_SPLIT = "pre-split"
INPUT_LAYOUTS = (LAYOUT_FLAT, LAYOUT_PRE_SPLIT)

# Ad catalogue (relative to the data root) and the visual model of the default pipeline.
CATALOG_PATH = "ads/ads.csv"
VISUAL_VARIANTS = ("none", "fixed", "finetune", "cbam", "cscnn")   # paper Table 8, in its order
VISUAL_VARIANT = "cscnn"
BACKBONES = ("light", "resnet18", "cnnf", "efficientnet_lite0")   # models/backbones.py builds each
BACKBONE = "light"              # small enough for 32x32 images on a CPU (models/backbones.py)
IMAGE_SIZE = 32
IMPRESSIONS_PER_AD = 10         # G: up to G impressions of one ad share a batch (paper: 25)

# `pipeline run --target-attention`: the ad's category attends over the user's clicked categories.
TARGET_ATTENTION = ("category_id", "clicked_categories")

# Trainer.
TRAIN_STEPS = 1800              # ~9.6 passes over the sample's 48k training rows: the image variants need
                                # them to learn the visual effect from clicks (docs/benchmarks.md)
EVAL_STEPS = 50
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
