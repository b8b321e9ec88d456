"""`cscnn models summary`: the Keras models' size."""

from __future__ import annotations

import json

from cscnn.cli.errors import UsageError


def _cmd_models_summary(args) -> int:
  from models.attention import AttentionConfig
  from models.backbones import BackboneConfig
  from models.cost import cost_report, paper_formula
  try:
    backbone = BackboneConfig(args.backbone, args.image_size, args.output_dim, args.placement,
                              args.attention_layers)
    attention = AttentionConfig(args.attention, args.channel_prior, args.spatial_prior, args.reduction)
  except ValueError as e:
    raise UsageError(str(e)) from e
  report = cost_report(backbone, attention, args.categories)
  if args.json:
    print(json.dumps(report))
    return 0
  print(f"visual tower: {args.backbone}, attention {args.attention} ({args.placement}), "
        f"{args.image_size}x{args.image_size}, |K|={args.categories}, C'={args.channel_prior}, "
        f"H'=W'={args.spatial_prior}, r={args.reduction}, x_v in R^{args.output_dim}")
  print(f"params: {report['params']:,} ({report['params'] / 1e6:.4f} M)")
  print(f"FLOPs (multiply-accumulates): {report['flops']:,} ({report['flops'] / 1e9:.4f} G)")
  print(f"attention modules: {report['attention_modules']}, their params: {report['attention_params']:,}")
  if report["modules"]:
    formula = "   paper 3.3.4 formula (channel, spatial)" if attention.category_prior else ""
    print(f"  {'C':>5} {'channel':>10} {'spatial':>10}" + formula)
    for m in report["modules"]:
      line = f"  {m['channels']:>5} {m['channel']:>10,} {m['spatial']:>10,}"
      if attention.category_prior:
        f = paper_formula(m["channels"], args.categories, args.channel_prior, args.spatial_prior, args.reduction)
        line += f"   {f['channel']:>10,} {f['spatial'] if attention.spatial else 0:>10,}"
      print(line)
  return 0


def register(sub) -> None:
  from models.attention import AttentionConfig      # Keras
  from models.backbones import BackboneConfig
  from models.cost import PAPER_BACKBONE, PAPER_CATEGORIES, PAPER_IMAGE_SIZE
  from spec import choices
  attention, backbone = AttentionConfig(), BackboneConfig()   # their defaults are the flags' defaults
  models = sub.add_parser("models", help="the Keras models").add_subparsers(dest="models_command", required=True)
  ms = models.add_parser("summary", help="parameters and FLOPs of a visual tower (paper Table 2)")
  ms.add_argument("--backbone", default=PAPER_BACKBONE, choices=choices.BACKBONES, help="CNN to count")
  ms.add_argument("--attention", default=attention.kind,
                  choices=list(choices.ATTENTION_KINDS),
                  help="attention module on the conv layers")
  ms.add_argument("--placement", default=backbone.placement, choices=list(choices.PLACEMENTS),
                  help="ResNet-18: a module after every conv (the paper's 16) or one per block (8)")
  ms.add_argument("--image-size", type=int, default=PAPER_IMAGE_SIZE,
                  help=f"S: input images S x S (the paper: {PAPER_IMAGE_SIZE})")
  ms.add_argument("--categories", type=int, default=PAPER_CATEGORIES, help="|K|")
  ms.add_argument("--channel-prior", type=int, default=attention.channel_prior, help="C'")
  ms.add_argument("--spatial-prior", type=int, default=attention.spatial_prior, help="H' = W'")
  ms.add_argument("--reduction", type=int, default=attention.reduction, help="r")
  ms.add_argument("--attention-layers", type=int, default=backbone.attention_layers,
                  help="L': attention on the last L' conv layers (None: all)")
  ms.add_argument("--output-dim", type=int, default=backbone.output_dim, help="|x_v|")
  ms.add_argument("--json", action="store_true", help="print JSON")
  ms.set_defaults(func=_cmd_models_summary)
