"""CataloguePretrain: pretrains the visual backbone on the ad catalogue (its images, categories
and title words; `models.pretrain`) before the Trainer uses it.

Input: AdCatalogGen's ``examples`` (the catalogue, images at ``image_size``). Output ``model``
(a Model artifact, not a servable one): ``backbone.weights.h5``, the backbone's weights as
`models.backbones.save_backbone_weights` writes them (layers found by name, so the file loads
into the Trainer's tower of the same backbone and image size with any attention), and
``metrics.json``, the held-out metrics of the pretrained encoder and of the random-weight
reference (`models.pretrain.pretrain`). The execution also records the headline metrics as
output properties.
"""

import json
import logging
import os

import tensorflow as tf
from tfx import v1 as tfx

from models.backbones import save_backbone_weights
from models.pretrain import METRICS_FILE, RECALL_AT, WEIGHTS_FILE, PretrainConfig, pretrain
from tfx_pipeline.catalog import load_catalog_with_titles

RECALL = f"title_word_recall_at_{RECALL_AT}"


@tfx.dsl.components.component
def CataloguePretrain(
    catalog: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    model: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Model],
    backbone: tfx.dsl.components.Parameter[str],
    image_size: tfx.dsl.components.Parameter[int],
    steps: tfx.dsl.components.Parameter[int] = PretrainConfig.steps,
    seed: tfx.dsl.components.Parameter[int] = 0,
    code_version: tfx.dsl.components.Parameter[str] = "",
) -> tfx.dsl.components.OutputDict(category_top1=float, random_category_top1=float,
                                   title_word_recall=float, random_title_word_recall=float):
  """Pretrains `backbone` on the catalogue for `steps` batches; writes its weights and metrics."""
  ad_ids, categories, images, titles = load_catalog_with_titles(catalog.uri, image_size)
  cfg = PretrainConfig(backbone=backbone, image_size=image_size, steps=steps, seed=seed)
  result = pretrain(ad_ids, categories, images, titles, cfg)
  tf.io.gfile.makedirs(model.uri)
  local = os.path.join(model.uri, WEIGHTS_FILE)
  save_backbone_weights(result.tower, local)
  with tf.io.gfile.GFile(os.path.join(model.uri, METRICS_FILE), "w") as f:
    json.dump(result.metrics, f, indent=1)
  m = result.metrics
  logging.info("CataloguePretrain: wrote %s", local)
  return {"category_top1": m["pretrained"]["category_top1"], "random_category_top1": m["random"]["category_top1"],
          "title_word_recall": m["pretrained"][RECALL], "random_title_word_recall": m["random"][RECALL]}
