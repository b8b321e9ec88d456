"""`cscnn report` and `cscnn tensorboard`: looking at a run."""

from __future__ import annotations

import os
import sys

from cscnn.cli.errors import UsageError


def _add_report(sub) -> None:
  rp = sub.add_parser("report", help="HTML report of the latest pipeline run in OUTPUT")
  rp.add_argument("--output", required=True, help="a `pipeline run --output` folder")
  rp.add_argument("--report-dir", default=None, help="where the report goes (None: OUTPUT/report)")
  rp.set_defaults(func=_cmd_report)


def _cmd_report(args) -> int:
  from cscnn.report import render_report
  try:
    path = render_report(args.output, args.report_dir)
  except FileNotFoundError as e:
    raise UsageError(str(e)) from e
  print(f"wrote {path}")
  return 0


def _add_tensorboard(sub) -> None:
  tb = sub.add_parser("tensorboard", help="TensorBoard over the training logs of OUTPUT")
  tb.add_argument("--output", required=True, help="a `pipeline run --output` folder")
  tb.add_argument("--host", default="127.0.0.1", help="address to bind (loopback by default)")
  tb.add_argument("--port", type=int, default=6006, help="TensorBoard's port")
  tb.set_defaults(func=_cmd_tensorboard)


def _cmd_tensorboard(args) -> int:
  import glob
  runs = sorted(glob.glob(os.path.join(args.output, "pipeline", "*Trainer", "model_run", "*")))
  if not runs:
    raise UsageError(f"no Trainer logs under {args.output}/pipeline")
  logdir = ",".join(f"run{os.path.basename(r)}:{r}" for r in runs)
  cmd = [sys.executable, "-m", "tensorboard.main", "--logdir_spec", logdir, "--host", args.host,
         "--port", str(args.port)]
  print(f"TensorBoard on http://{args.host}:{args.port} over {len(runs)} training run(s)", flush=True)
  os.execv(sys.executable, cmd)


def register(sub) -> None:
  _add_report(sub)
  _add_tensorboard(sub)
