"""What several command groups share."""

from __future__ import annotations

from cscnn.cli.errors import UsageError


def load_spec(path):
  """The feature spec of `--spec PATH` (None: the project's default spec); a file that cannot be
  used is a UsageError naming the file, line and key."""
  from spec.features import DEFAULT_SPEC
  from spec.files import SpecFileError, load
  try:
    return DEFAULT_SPEC if path is None else load(path)
  except SpecFileError as e:
    raise UsageError(str(e)) from e
