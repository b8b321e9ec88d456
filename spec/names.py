"""Names shared across packages: model outputs, SavedModel signatures and their inputs.

The server, the client, the exporter and the evaluation read them here, so that none of them
imports another package's code to learn a string.
"""

OUTPUT_KEY = "ctr"                          # P(click) [B, 1]
VISUAL_FALLBACK_KEY = "visual_fallback"     # 1 where the ad's x_v came from its category's mean

SERVING_DEFAULT = "serving_default"         # serialized tf.Examples -> outputs
SERVING_RAW = "serving_raw"                 # one raw tensor per column -> outputs
TRANSFORM_FEATURES = "transform_features"   # serialized tf.Examples -> Transform's outputs
EXAMPLES_INPUT = "examples"                 # the input of the tf.Example signatures

# Keras inputs of the visual tower (models/backbones.py) and the visual table.
IMAGE_INPUT = "image"
CATEGORY_INPUT = "category"
IMAGE_KEY_INPUT = "image_key"
