"""`cscnn spec`: feature spec files (spec/files.py)."""

from __future__ import annotations

import os

from cscnn.cli.common import load_spec
from cscnn.cli.errors import UsageError


def _cmd_infer(args) -> int:
  from cscnn.spec_infer import InferError, write_inferred_spec
  if os.path.exists(args.out) and not args.force:
    raise UsageError(f"{args.out} exists (--force overwrites it)")
  try:
    spec, notes = write_inferred_spec(args.data, args.out)
  except (InferError, OSError) as e:
    raise UsageError(str(e)) from e
  print("\n".join(notes[1:]))
  print(f"wrote {args.out}: {len(spec.features)} features, labels {', '.join(spec.labels)}; edit it, then "
        f"bin/cscnn pipeline run --data {args.data} --spec {args.out} --output OUT")
  return 0


def _add_infer(group) -> None:
  p = group.add_parser("infer", help="propose a feature spec from the impressions CSVs (TFDV statistics)")
  p.add_argument("--data", required=True, help="folder with impressions/*.csv or impressions/train/*.csv")
  p.add_argument("--out", required=True, help="the spec file to write (YAML)")
  p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
  p.set_defaults(func=_cmd_infer)


def _cmd_show(args) -> int:
  from spec.files import dumps
  spec = load_spec(args.spec)
  print(dumps(spec, header="the project's default spec (spec/features.py)" if args.spec is None else ""), end="")
  return 0


def _add_show(group) -> None:
  p = group.add_parser("show", help="print a spec in file form, checked (default: the project's own)")
  p.add_argument("--spec", default=None, metavar="FILE", help="a spec file to check and print")
  p.set_defaults(func=_cmd_show)


def register(sub) -> None:
  group = sub.add_parser("spec", help="feature spec files").add_subparsers(dest="spec_command", required=True)
  _add_infer(group)
  _add_show(group)
