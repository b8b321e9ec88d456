"""Pipeline-wide constants and defaults: the one place for names, sizes and thresholds."""

PIPELINE_NAME = "cscnn_ctr"
MODEL_NAME = "cscnn_ctr"

# ExampleGen: impressions are read from <data>/impressions/*.csv and hash-split 4:1.
IMPRESSIONS_PATTERN = "impressions/*.csv"
TRAIN_EVAL_BUCKETS = (4, 1)

# Trainer.
TRAIN_STEPS = 300
EVAL_STEPS = 50
TRAIN_BATCH_SIZE = 256
EVAL_BATCH_SIZE = 512

# Evaluator gating: an absolute AUC floor on the overall slice, and no AUC regression larger
# than AUC_TOLERANCE against the latest blessed model.
AUC_FLOOR = 0.60
AUC_TOLERANCE = 0.01
