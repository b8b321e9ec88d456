"""`cscnn schema`: the curated schema."""

from __future__ import annotations

import os

from cscnn.cli.common import load_spec
from cscnn.cli.errors import UsageError


def _cmd_schema(args) -> int:
  from tfx_pipeline.schema import SCHEMA_PATH, schema_text, write_schema
  if args.spec is not None:
    spec = load_spec(args.spec)
    if args.write or args.check:
      raise UsageError("--write and --check are for the project's own schema; with --spec the "
                       "schema is printed (pipeline run --spec writes it beside the run)")
    print(schema_text(spec, os.path.abspath(args.spec)), end="")
    return 0
  if args.write:
    print(f"wrote {write_schema()}")
    return 0
  if args.check:
    with open(SCHEMA_PATH) as f:
      same = f.read() == schema_text()
    print("schema is up to date" if same else f"{SCHEMA_PATH} is stale: run `cscnn schema --write`")
    return 0 if same else 1
  print(schema_text(), end="")
  return 0


def register(sub) -> None:
  sc = sub.add_parser("schema", help="print, write or check the curated schema")
  g = sc.add_mutually_exclusive_group()
  g.add_argument("--write", action="store_true", help="write the schema file from the feature spec")
  g.add_argument("--check", action="store_true", help="exit 1 if the schema file is stale")
  sc.add_argument("--spec", default=None, metavar="FILE", help="print the schema of this feature spec file")
  sc.set_defaults(func=_cmd_schema)
