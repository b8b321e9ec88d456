"""The command line explains itself: every option of every command has a help text, and --help
shows each option's default."""

import argparse

import pytest

from cscnn.cli import build_parser
from spec import choices
from tfx_pipeline import configs


def _commands(parser, path=("cscnn",)):
  """(command path, parser) for the root and every sub-command, depth first."""
  yield path, parser
  for action in parser._actions:  # pylint: disable=protected-access
    if isinstance(action, argparse._SubParsersAction):  # pylint: disable=protected-access
      for name, sub in action.choices.items():
        yield from _commands(sub, path + (name,))


def test_every_option_of_every_command_has_a_help_text():
  missing, commands = [], 0
  for path, parser in _commands(build_parser()):
    commands += 1
    for action in parser._actions:  # pylint: disable=protected-access
      if action.option_strings and not (action.help or "").strip():
        missing.append(f"{' '.join(path)} {'/'.join(action.option_strings)}")
  assert commands > 20, "the walk did not reach the sub-commands"
  assert not missing, f"options without help: {missing}"


def test_help_shows_the_defaults():
  parser = build_parser()
  run = dict(_commands(parser))[("cscnn", "pipeline", "run")]
  text = run.format_help()
  assert f"(default: {configs.TRAIN_STEPS})" in text
  assert f"(default: {choices.BACKBONE})" in text
  # help texts that name their own fallback are not given a second default
  assert "(None: 20) (default" not in text.replace("\n", " ")


def test_serve_and_predict_defaults_are_the_serving_packages():
  """The serving flags' defaults are written out in cscnn/cli/serving.py (importing the serving
  package for every --help would load gRPC): they stay the library's."""
  import inspect  # pylint: disable=import-outside-toplevel
  from serving.client import CtrClient  # pylint: disable=import-outside-toplevel
  from serving.model_manager import ModelManager  # pylint: disable=import-outside-toplevel
  from serving.server import ModelServer, RequestLimits  # pylint: disable=import-outside-toplevel
  commands = dict(_commands(build_parser()))
  serve = commands[("cscnn", "serve")].parse_args([])
  server = inspect.signature(ModelServer).parameters
  assert (serve.port, serve.rest_port, serve.host) == tuple(server[k].default for k in ("port", "rest_port", "host"))
  assert serve.file_system_poll_wait_seconds == inspect.signature(ModelManager).parameters["poll_interval"].default
  assert (serve.max_request_rows, serve.max_request_bytes) == (RequestLimits().max_rows, RequestLimits().max_bytes)
  predict = commands[("cscnn", "predict")].parse_args(["--server", "h:1", "--model", "m", "--input", "x.csv"])
  assert predict.timeout == inspect.signature(CtrClient).parameters["timeout"].default


def test_a_second_run_into_the_same_output_stops_while_the_first_holds_it(tmp_path):
  """Two `pipeline run`s into one --output would share its ML Metadata: the second one stops
  before touching anything, naming the holder, and the folder is free again once it is released."""
  import fcntl
  import subprocess
  import sys
  from conftest import ROOT
  from cscnn.cli.common import RUN_LOCK, lock_output
  out = tmp_path / "run"
  held = lock_output(str(out))
  cmd = [sys.executable, "-m", "cscnn", "pipeline", "run", "--data", str(tmp_path / "data"), "--output", str(out),
         "--variant", "none", "--skip-input-check"]                  # straight to the lock
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert f"{out} is in use by a run that has not finished (pid " in proc.stderr
  assert sorted(p.name for p in out.iterdir()) == [RUN_LOCK]          # nothing written beside the lock
  held.close()
  again = lock_output(str(out))
  with open(out / RUN_LOCK) as other, pytest.raises(BlockingIOError):   # a second holder is refused
    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
  again.close()
