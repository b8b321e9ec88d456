"""The lists of choices a user picks from (CLI flags, trainer settings) and their defaults.

Models validate against them; the CLI offers them; the pipeline passes them on.
"""

TABLE8_VARIANTS = ("none", "fixed", "finetune", "cbam", "cscnn")   # paper Table 8, in its order
# ``transfer``: JD's multimodal transfer (seed jd_rec_multiobjective_sequence_multimodal): the
# frozen encoder's features through a learnt embedding and a category-gated multi-expert transfer
# layer (models/visual.py VisualConfig.transfer_dim / transfer_experts, models/transfer.py).
TRANSFER = "transfer"
VISUAL_VARIANTS = TABLE8_VARIANTS + (TRANSFER,)
VISUAL_VARIANT = "cscnn"
# Variants whose backbone is frozen (the encoder keeps its initial weights).
FROZEN_VARIANTS = ("fixed", TRANSFER)

IMAGENET_BACKBONE = "efficientnet_lite0"   # the backbone with ImageNet weights (models/efficientnet_lite.py)
BACKBONES = ("light", "resnet18", "cnnf", IMAGENET_BACKBONE)   # models/backbones.py builds each
BACKBONE = "light"              # small enough for 32x32 images on a CPU (models/backbones.py)

# Where the visual backbone starts (`pipeline run --visual-init`, VisualConfig.backbone_weights):
# random weights, the pipeline's CataloguePretrain on the ad catalogue, the converted ImageNet
# weights (efficientnet_lite0), or else the path of a Keras weights file.
SCRATCH = "scratch"
CATALOGUE = "catalogue"
IMAGENET = "imagenet"
VISUAL_INITS = (SCRATCH, CATALOGUE, IMAGENET)
VISUAL_INIT = SCRATCH

ATTENTION_KINDS = ("none", "se", "se_prior", "cbam_channel", "cbam_channel_prior", "cbam", "cscnn")

PLACEMENTS = ("per-conv", "per-block")   # where attention sits in a ResNet-18 (models/backbones.py)

BASELINES = ("popularity", "category_affinity", "item_knn", "blend")   # models/baselines.py

# A missing or undecodable catalogue image (components/ad_catalog.py): stop naming it (the
# default), or use a grey image flagged image_ok=0.
ON_BAD_IMAGE = ("error", "blank")
# With "blank": the largest share of the catalogue's ads that may fall back to the grey image
# before AdCatalogGen stops (most images missing means the image paths are not what the data
# says, e.g. a folder not visible where the pipeline runs, not a few bad files).
MAX_BLANK_SHARE = 0.05

# ExampleGen input layouts (relative to the data root; `input_check.input_splits` decides):
# - "flat": <data>/impressions/*.csv, hash-split 4:1 into train / eval by ExampleGen;
# - "pre-split": <data>/impressions/train/*.csv and <data>/impressions/eval/*.csv are the
#   train and eval splits as they are (e.g. one held-out interaction per user).
LAYOUT_FLAT = "flat"
LAYOUT_PRE_SPLIT = "pre-split"
INPUT_LAYOUTS = (LAYOUT_FLAT, LAYOUT_PRE_SPLIT)
