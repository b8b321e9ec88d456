"""The `cscnn` command line (run it through `bin/cscnn`, which enters the environment).

  cscnn data sample --out DIR [--impressions N] [--ads M] [--categories K] [--image-size S] [--seed X] ...
  cscnn data movielens --source DIR --out DIR [--users N] [--negatives K] [--eval-negatives M] [--seed S]
  cscnn pipeline run --data DIR --output OUT [--beam-arg ARG ...] [--train-steps N] ...
  cscnn pipeline summary --output OUT [--json]
  cscnn schema [--write | --check]

One module per command group (`GROUPS`, in the order ``cscnn --help`` lists them; a new group is
a module cscnn/cli/<group>.py and its name there), each with a ``register(subparsers)`` that adds the group's
parsers. A command's parser is built right beside its handler (``_add_<command>`` next to
``_cmd_<command>``, or ``register`` itself in a one-command module), with choices and defaults
read from the library. A handler takes the parsed arguments and returns the exit code; for input
it cannot run on it raises `UsageError` (cli/errors.py), which `main` prints and turns into 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cscnn.cli.errors import UsageError

# The command groups, cscnn/cli/<group>.py each, in the order `cscnn --help` lists their commands.
GROUPS = ("data", "pipeline", "models", "bench", "serving", "experiment", "report", "spec", "schema")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
  """Appends "(default: X)" to an option's help, except where there is nothing to show (None,
  off flags, empty lists): those help texts say what happens without the option."""

  def _get_help_string(self, action):
    if action.default is None or action.default is False or action.default == []:
      return action.help
    return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
  """Every (sub)command's --help shows each option's default (sub-parsers are of the parent's class)."""

  def __init__(self, *args, **kwargs):
    kwargs.setdefault("formatter_class", _HelpFormatter)
    super().__init__(*args, **kwargs)


def _leaves(parser: argparse.ArgumentParser):
  """The parsers of `parser`'s commands that have no sub-commands (`parser` itself if it has none)."""
  subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # pylint: disable=protected-access
  if not subs:
    yield parser
  for action in subs:
    for child in action.choices.values():
      yield from _leaves(child)


def build_parser() -> argparse.ArgumentParser:
  p = _Parser(prog="cscnn", description="Visual-aware CTR prediction (CSCNN + DCN) on TFX.")
  sub = p.add_subparsers(dest="command", required=True)
  for group in GROUPS:
    importlib.import_module(f"cscnn.cli.{group}").register(sub)
  for leaf in _leaves(p):
    leaf.set_defaults(_prog=leaf.prog)    # "cscnn pipeline run": the prefix of its UsageErrors
  return p


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  try:
    return args.func(args)
  except UsageError as e:
    print(f"{args._prog}: {e}", file=sys.stderr)  # pylint: disable=protected-access
    return 2
