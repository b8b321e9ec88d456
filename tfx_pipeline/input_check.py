"""Pre-flight check of the impressions CSV files, before any TFX component runs.

CsvExampleGen fails deep inside Beam on a malformed row, and ExampleValidator sees only
statistics, not rows. This check names the file, line and field of the first problems:
missing required columns, wrong number of fields, a non-integer value in an int column, a
label other than 0/1, an empty required value. Unknown *values* are not errors: Transform maps
them to OOV buckets.
"""

from __future__ import annotations

import csv
import glob
import os
from typing import List

from tfx_pipeline import configs
from tfx_pipeline import features as F


class InputDataError(ValueError):
  """The impressions data cannot be used as it is."""


def check_impressions(data_root: str, max_errors: int = 10) -> int:
  """Checks every impressions file under `data_root`; returns the number of rows.

  Raises InputDataError listing up to `max_errors` problems (file:line, field, value).
  """
  pattern = os.path.join(data_root, configs.IMPRESSIONS_PATTERN)
  files = sorted(glob.glob(pattern))
  if not files:
    raise InputDataError(f"no impressions files match {pattern}")
  types = {F.LABEL_KEY: int, **{f.name: f.dtype for f in F.FEATURES}}
  errors: List[str] = []
  rows = 0
  for path in files:
    with open(path, newline="") as fh:
      reader = csv.reader(fh)
      header = next(reader, None)
      if header is None:
        errors.append(f"{path}: empty file (no header)")
        continue
      missing = [c for c in F.RAW_COLUMNS if c not in header]
      if missing:
        errors.append(f"{path}: missing required column(s) {missing}; header is {header}")
        continue
      index = {c: header.index(c) for c in F.RAW_COLUMNS}
      for line_no, row in enumerate(reader, start=2):
        if len(errors) >= max_errors:
          break
        if not row:
          continue
        rows += 1
        if len(row) != len(header):
          errors.append(f"{path}:{line_no}: {len(row)} fields, header has {len(header)}")
          continue
        for col, i in index.items():
          value = row[i]
          if value == "" and col not in (f.name for f in F.FEATURES if f.kind == F.MULTI):
            errors.append(f"{path}:{line_no}: field {col!r} is empty")
          elif types[col] is int:
            try:
              v = int(value)
            except ValueError:
              errors.append(f"{path}:{line_no}: field {col!r} must be an integer, got {value!r}")
              continue
            if col == F.LABEL_KEY and v not in (0, 1):
              errors.append(f"{path}:{line_no}: field {col!r} must be 0 or 1, got {value!r}")
  if errors:
    more = " (stopped after the first %d)" % max_errors if len(errors) >= max_errors else ""
    raise InputDataError("bad impressions data%s:\n  %s" % (more, "\n  ".join(errors)))
  return rows
