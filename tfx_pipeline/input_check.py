"""Pre-flight check of the impressions CSV files, before any TFX component runs.

CsvExampleGen fails deep inside Beam on a malformed row, and ExampleValidator sees only
statistics, not rows. This check names the file, line and field of the first problems:
a column of the feature spec missing from the header or one the spec does not declare (the
curated schema's ExampleValidator would stop the run on it after ExampleGen), wrong number of fields, a non-integer
value in an int column, a non-number in a float column, a label other than 0/1, an empty
required value. Unknown *values* are not errors: Transform maps
them to OOV buckets.

It also decides the input layout (`input_splits`), once for the check and for
`pipeline.create_pipeline`: flat ``impressions/*.csv`` (ExampleGen hash-splits it) or pre-split
``impressions/train/*.csv`` + ``impressions/eval/*.csv`` (used as the splits as they are).
"""

from __future__ import annotations

import csv
import glob
import os
from typing import Callable, List, Optional, Tuple

from spec.features import DEFAULT_SPEC, TOKEN_KINDS, FeatureSpec
from tfx_pipeline import configs


class InputDataError(ValueError):
  """The impressions data cannot be used as it is."""


def _glob(pattern: str) -> List[str]:
  """Local paths with `glob`; URLs (gs://, s3://, ...) with tf.io.gfile (imported only then)."""
  if "://" in pattern:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    return sorted(tf.io.gfile.glob(pattern))
  return sorted(glob.glob(pattern))


def detect_layout(data_root: str) -> str:
  """``configs.LAYOUT_FLAT`` or ``configs.LAYOUT_PRE_SPLIT``, from the CSV files under `data_root`.

  Pre-split when ``impressions/train/*.csv`` or ``impressions/eval/*.csv`` has files; flat
  otherwise (also when nothing matches at all: ExampleGen / `check_impressions` then report the
  missing files). Raises InputDataError for a data root with both layouts, or with only one of
  the train / eval folders, naming the folders."""
  flat = _glob(os.path.join(data_root, configs.IMPRESSIONS_PATTERN))
  train = _glob(os.path.join(data_root, configs.TRAIN_PATTERN))
  evals = _glob(os.path.join(data_root, configs.EVAL_PATTERN))
  impressions_dir = os.path.join(data_root, os.path.dirname(configs.IMPRESSIONS_PATTERN))
  if not train and not evals:
    return configs.LAYOUT_FLAT
  if flat:
    raise InputDataError(
        f"{impressions_dir} mixes both input layouts: {len(flat)} CSV file(s) directly in it "
        f"(flat, hash-split) and pre-split CSV files in its train/ and eval/ folders; keep one")
  if not train or not evals:
    have, missing = ((configs.TRAIN_PATTERN, configs.EVAL_PATTERN) if train
                     else (configs.EVAL_PATTERN, configs.TRAIN_PATTERN))
    raise InputDataError(
        f"pre-split input is incomplete: {os.path.join(data_root, have)} has CSV files but "
        f"{os.path.join(data_root, os.path.dirname(missing))} has none (a pre-split data set "
        f"needs both {configs.TRAIN_PATTERN} and {configs.EVAL_PATTERN})")
  return configs.LAYOUT_PRE_SPLIT


def input_splits(data_root: Optional[str] = None,
                 layout: Optional[str] = None) -> Tuple[Tuple[str, str], ...]:
  """The ExampleGen input splits, ``((split name, file pattern relative to the data root), ...)``.

  `layout` given: that layout, no file system access (`data_root` unused). Otherwise detected
  with `detect_layout(data_root)`. Flat: ``(("impressions", "impressions/*.csv"),)``, which
  ExampleGen hash-splits into train / eval (``configs.TRAIN_EVAL_BUCKETS``); pre-split:
  ``(("train", "impressions/train/*.csv"), ("eval", "impressions/eval/*.csv"))``.
  """
  if layout is None:
    if data_root is None:
      raise ValueError("input_splits needs a data_root or an explicit layout")
    layout = detect_layout(data_root)
  if layout == configs.LAYOUT_FLAT:
    return (("impressions", configs.IMPRESSIONS_PATTERN),)
  if layout == configs.LAYOUT_PRE_SPLIT:
    return ((configs.TRAIN_SPLIT, configs.TRAIN_PATTERN), (configs.EVAL_SPLIT, configs.EVAL_PATTERN))
  raise ValueError(f"input layout must be one of {configs.INPUT_LAYOUTS}, got {layout!r}")


def check_impressions(data_root: str, spec: FeatureSpec = DEFAULT_SPEC, max_errors: int = 10,
                      locate: Optional[Callable[[str], str]] = None) -> int:
  """Checks every impressions file of `data_root`'s layout (flat or pre-split, see
  `input_splits`) against the columns of `spec`; returns the number of rows. `locate` (optional)
  says where the spec names a column (e.g. ``spec.yaml:7: features[3].name``, from
  `spec.files.column_location`) for the error about a column the data lacks.

  Raises InputDataError listing up to `max_errors` problems (file:line, field, value), or for a
  data root without impressions files or with a mixed / incomplete layout.
  """
  splits = input_splits(data_root)
  files = []
  for split, rel in splits:
    pattern = os.path.join(data_root, rel)
    matched = _glob(pattern)
    if not matched:
      raise InputDataError(
          f"no impressions files match {pattern} (expected {configs.IMPRESSIONS_PATTERN}, or "
          f"{configs.TRAIN_PATTERN} and {configs.EVAL_PATTERN} for pre-split data)")
    files.extend((split, path) for path in matched)
  columns = spec.raw_columns
  may_be_empty = {f.name for f in spec.features if f.kind in TOKEN_KINDS} | set(spec.time_columns)
  errors: List[str] = []
  rows = 0
  split_rows = {split: 0 for split, _ in splits}
  for split, path in files:
    with open(path, newline="") as fh:
      reader = csv.reader(fh)
      header = next(reader, None)
      if header is None:
        errors.append(f"{path}: empty file (no header)")
        continue
      missing = [c for c in columns if c not in header]
      if missing:
        errors.append(f"{path}: missing column(s) {missing} that the feature spec names; header is {header}")
        errors.extend(f"{locate(c)}: column {c!r} is not in {path}" for c in missing if locate is not None)
        continue
      extra = [c for c in header if c not in columns]
      if extra:
        errors.append(f"{path}: column(s) {extra} are not in the feature spec (ExampleValidator would stop the "
                      "pipeline on them): declare them in the spec or leave them out of the CSV")
        continue
      index = {c: header.index(c) for c in columns}
      for line_no, row in enumerate(reader, start=2):
        if len(errors) >= max_errors:
          break
        if not row:
          continue
        rows += 1
        split_rows[split] += 1
        if len(row) != len(header):
          errors.append(f"{path}:{line_no}: {len(row)} fields, header has {len(header)}")
          continue
        for col, i in index.items():
          value = row[i]
          kind = spec.raw_dtype(col)
          if value == "" and col not in may_be_empty:
            errors.append(f"{path}:{line_no}: field {col!r} is empty")
          elif kind is int:
            try:
              v = int(value)
            except ValueError:
              errors.append(f"{path}:{line_no}: field {col!r} must be an integer, got {value!r}")
              continue
            if col in spec.labels and v not in (0, 1):
              errors.append(f"{path}:{line_no}: field {col!r} must be 0 or 1, got {value!r}")
          elif kind is float:
            try:
              float(value)
            except ValueError:
              errors.append(f"{path}:{line_no}: field {col!r} must be a number, got {value!r}")
  if errors:
    more = " (stopped after the first %d)" % max_errors if len(errors) >= max_errors else ""
    raise InputDataError("bad impressions data%s:\n  %s" % (more, "\n  ".join(errors)))
  if len(splits) > 1:
    for split, rel in splits:
      if split_rows[split] == 0:
        raise InputDataError(f"the {split} split has no rows: the files matching "
                             f"{os.path.join(data_root, rel)} hold only a header")
  return rows
