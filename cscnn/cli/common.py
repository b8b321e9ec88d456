"""What several command groups share."""

from __future__ import annotations

import inspect
from typing import Dict

from cscnn.cli.errors import UsageError


def defaults(func) -> Dict[str, object]:
  """The keyword defaults of `func` (a class: of its constructor) by parameter name: a command
  whose flags feed `func` offers the same defaults."""
  return {name: p.default for name, p in inspect.signature(func).parameters.items()
          if p.default is not inspect.Parameter.empty}


def joined(values) -> str:
  """(1, 5, 25) -> "1,5,25": a default of a comma-separated list flag."""
  return ",".join(str(v) for v in values)


def load_spec(path):
  """The feature spec of `--spec PATH` (None: the project's default spec); a file that cannot be
  used is a UsageError naming the file, line and key."""
  from spec.features import DEFAULT_SPEC
  from spec.files import SpecFileError, load
  try:
    return DEFAULT_SPEC if path is None else load(path)
  except SpecFileError as e:
    raise UsageError(str(e)) from e
