"""Catalogue pretraining outside the pipeline: reads ``DATA/ads/ads.csv`` as AdCatalogGen does,
pretrains a backbone (models/pretrain.py) and prints its held-out metrics beside the
random-weight reference as JSON.

  bin/env python scripts/pretrain_catalogue.py --data DATA [--ads N] [--steps N] [--backbone light]
      [--image-size 32] [--seed 0] [--out FILE.weights.h5]
"""

import argparse
import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data", required=True)
  p.add_argument("--ads", type=int, default=0, help="the first N ads only (0: all)")
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--batch-size", type=int, default=64)
  p.add_argument("--backbone", default="light")
  p.add_argument("--image-size", type=int, default=32)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--brightness", type=float, default=None, help="brightness augmentation (share of the range)")
  p.add_argument("--out", default=None, help="save the backbone weights here (.weights.h5)")
  args = p.parse_args()
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  from models.backbones import save_backbone_weights
  from components.ad_catalog import read_catalog_arrays
  from models.pretrain import PretrainConfig, pretrain
  ids, cats, imgs, titles = read_catalog_arrays(args.data, args.image_size, args.ads)
  extra = {} if args.brightness is None else {"brightness": args.brightness}
  cfg = PretrainConfig(args.backbone, args.image_size, args.steps, args.batch_size, seed=args.seed, **extra)
  result = pretrain(ids, cats, imgs, titles, cfg)
  if args.out:
    save_backbone_weights(result.tower, args.out)
  print(json.dumps({k: v for k, v in result.metrics.items() if k != "config"}, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
