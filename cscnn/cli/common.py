"""What several command groups share."""

from __future__ import annotations


def load_spec(path):
  """The feature spec of `--spec PATH` (None: the project's default spec); SpecFileError names
  the file, line and key."""
  from spec.features import DEFAULT_SPEC
  from spec.files import load
  return DEFAULT_SPEC if path is None else load(path)
