"""The command line's one error type."""


class UsageError(Exception):
  """The command cannot run on this input (a bad spec file, a missing catalogue, a weights path
  that cannot load, input data that fails its check, ...): handlers raise it with the reason,
  and `cscnn.cli.main` prints ``cscnn <command>: <reason>`` on stderr and exits 2.

  A run that starts and then fails is not a usage error: its handler reports it and returns 1."""
