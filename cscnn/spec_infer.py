"""`cscnn spec infer`: a feature spec proposed from the impressions CSVs, for the user to edit.

TFDV computes the statistics of the training files (the flat ``impressions/*.csv`` or the
pre-split ``impressions/train/*.csv``): each column's type, number of distinct values, range and
most frequent values; a second TFDV pass treats integer columns as categorical to count their
distinct values. From them:

- a 0/1 integer column is a label; the one whose name looks most like a click is the first;
- a float column, or an integer column with more than `MAX_INT_CATEGORIES` distinct values, is
  ``numeric``: ``log1p_zscore`` when it is non-negative and heavy-tailed (max above
  `SKEW_RATIO` times the mean), else ``zscore``;
- a string column whose frequent values hold spaces is a token list (``multi``), or a
  ``sequence`` when another column holds as many numbers per row (its time column); its
  ``max_len`` is the 95th percentile of the token counts of a sample of rows;
- every other column is ``categorical``, hashed into ``2 ** ceil(log2(2 * distinct))`` buckets
  above `HASH_ABOVE` distinct values;
- the roles go to the columns whose names look like a user, an ad and a category; the notes at
  the top of the file say what was guessed and what the statistics cannot know (frequency
  control of ids, domains, which label is the click).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

from spec.features import CATEGORICAL, MULTI, NUMERIC, SEQUENCE, Feature, FeatureSpec

MAX_INT_CATEGORIES = 1000      # more distinct integers than this: a number, not a category
HASH_ABOVE = 100_000           # more distinct values than this: hash instead of a vocabulary
SKEW_RATIO = 20.0              # max > SKEW_RATIO * mean (non-negative): log1p before the z-score
SAMPLE_ROWS = 10_000           # rows read for token counts and time columns

_LABEL_NAMES = ("label", "click", "clicked", "is_click", "target", "y")
_ROLE_PATTERNS = {
    "user": r"user|customer|member|client|visitor|uid",
    "ad": r"^ad$|^ad_|_ad$|_ad_|ad_?id|item|product|sku|movie|offer|creative|article|doc",
    "category": r"categ|cate$|cat_?id|^cat$|type|genre|class|department|section",
}


_TIME = re.compile(r"time|_ts$|^ts_|age$|ages$|date|stamp|when", re.IGNORECASE)


class InferError(ValueError):
  """The data cannot give a spec (no files, no label column, ...)."""


@dataclasses.dataclass
class Column:
  name: str
  type: str                       # INT, FLOAT, STRING
  unique: Optional[int] = None
  min: Optional[float] = None
  max: Optional[float] = None
  mean: Optional[float] = None
  top_values: Tuple[str, ...] = ()


def _training_files(data_root: str) -> Tuple[str, List[str]]:
  """The glob pattern of the training CSVs (the layout's first split) and its files."""
  import glob  # pylint: disable=import-outside-toplevel
  from tfx_pipeline.input_check import InputDataError, input_splits  # pylint: disable=import-outside-toplevel
  try:
    _, rel = input_splits(data_root)[0]
  except InputDataError as e:
    raise InferError(str(e)) from e
  pattern = os.path.join(data_root, rel)
  files = sorted(glob.glob(pattern))
  if not files:
    raise InferError(f"no impressions CSV matches {pattern}")
  return pattern, files


def _stats(pattern: str, schema=None) -> Dict[str, Column]:
  import tensorflow_data_validation as tfdv  # pylint: disable=import-outside-toplevel
  from tensorflow_metadata.proto.v0 import statistics_pb2  # pylint: disable=import-outside-toplevel
  stats = tfdv.generate_statistics_from_csv(pattern, stats_options=tfdv.StatsOptions(schema=schema,
                                                                                     num_top_values=20))
  out = {}
  types = {statistics_pb2.FeatureNameStatistics.INT: "INT", statistics_pb2.FeatureNameStatistics.FLOAT: "FLOAT",
           statistics_pb2.FeatureNameStatistics.STRING: "STRING", statistics_pb2.FeatureNameStatistics.BYTES: "STRING"}
  for f in stats.datasets[0].features:
    name = f.path.step[0] if f.path.step else f.name
    col = Column(name, types.get(f.type, "STRING"))
    if f.HasField("num_stats"):
      col.min, col.max, col.mean = f.num_stats.min, f.num_stats.max, f.num_stats.mean
    if f.HasField("string_stats"):
      col.unique = int(f.string_stats.unique)
      col.top_values = tuple(v.value for v in f.string_stats.top_values)
    out[name] = col
  return out


def column_statistics(pattern: str) -> Dict[str, Column]:
  """TFDV statistics per column; integer columns are counted as categorical too (unique, top values)."""
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=import-outside-toplevel
  first = _stats(pattern)
  schema = schema_pb2.Schema()
  for col in first.values():
    feature = schema.feature.add(name=col.name)
    feature.type = {"INT": schema_pb2.INT, "FLOAT": schema_pb2.FLOAT}.get(col.type, schema_pb2.BYTES)
    if col.type == "INT":
      feature.int_domain.is_categorical = True
  second = _stats(pattern, schema)
  for name, col in first.items():
    if col.type == "INT" and name in second:
      col.unique, col.top_values = second[name].unique, second[name].top_values
  return first


def _rows(files: Sequence[str], limit: int = SAMPLE_ROWS) -> Tuple[List[str], List[Dict[str, str]]]:
  rows: List[Dict[str, str]] = []
  header: List[str] = []
  for path in files:
    with open(path, newline="", encoding="utf-8") as f:
      reader = csv.DictReader(f)
      header = header or list(reader.fieldnames or [])
      for row in reader:
        rows.append(row)
        if len(rows) >= limit:
          return header, rows
  return header, rows


def _tokens(value: str) -> List[str]:
  return [t for t in (value or "").split() if t != "_"]


def _is_number(token: str) -> bool:
  try:
    float(token)
    return True
  except ValueError:
    return False


def _percentile_95(values: Sequence[int]) -> int:
  ordered = sorted(values)
  return ordered[min(len(ordered) - 1, int(math.ceil(0.95 * len(ordered))) - 1)] if ordered else 1


def _is_label(col: Column) -> bool:
  return col.type == "INT" and col.min is not None and col.min >= 0 and col.max <= 1 and (col.unique or 2) <= 2


def _role(names: Sequence[str], role: str, taken: Sequence[str]) -> Optional[str]:
  pattern = re.compile(_ROLE_PATTERNS[role], re.IGNORECASE)
  for name in names:
    if name not in taken and pattern.search(name):
      return name
  return None


def infer_spec(data_root: str) -> Tuple[FeatureSpec, List[str]]:
  """A spec for the impressions under `data_root`, and notes on what was guessed."""
  pattern, files = _training_files(data_root)
  stats = column_statistics(pattern)
  header, rows = _rows(files)
  names = [n for n in header if n in stats]
  notes = [f"inferred by `cscnn spec infer` from {len(files)} file(s) under {os.path.abspath(data_root)} "
           "(TFDV statistics); check it, then: cscnn pipeline run --spec THIS_FILE ..."]

  labels = [n for n in names if _is_label(stats[n])]
  labels.sort(key=lambda n: (0 if n.lower() in _LABEL_NAMES else 1 if re.search("click|label", n, re.I) else 2,
                             names.index(n)))
  if not labels:
    raise InferError(f"no column of {', '.join(names)} holds only 0 and 1: a spec needs a label column")
  labels = [labels[0]] + [n for n in labels[1:] if re.search("conver|buy|purchase|order|like|label", n, re.I)]
  if len(labels) > 1:
    notes.append(f"labels: {', '.join(labels)}; the first is the one the model trains on")

  tokens = {n: [len(_tokens(r.get(n, ""))) for r in rows] for n in names}
  listy = [n for n in names if n not in labels and stats[n].type == "STRING"
           and any(" " in v for v in stats[n].top_values)]
  numeric_lists = {n for n in listy if all(_is_number(t) for r in rows for t in _tokens(r.get(n, "")))}
  time_of: Dict[str, str] = {}   # sequence column -> its time column
  for n in listy:
    if n in time_of.values() or _TIME.search(n):
      continue
    candidates = sorted((m for m in numeric_lists if m != n and m not in time_of and m not in time_of.values()
                         and tokens[m] == tokens[n] and any(tokens[m])),
                        key=lambda m: (0 if _TIME.search(m) else 1, names.index(m)))
    if candidates and (n not in numeric_lists or _TIME.search(candidates[0])):
      time_of[n] = candidates[0]
      notes.append(f"{n}: a sequence with the times or ages in {candidates[0]} (as many values per row)")

  features: List[Feature] = []
  for n in names:
    col = stats[n]
    if n in labels or n in time_of.values():
      continue
    if n in listy:
      max_len = max(1, _percentile_95(tokens[n]))
      if n in time_of:
        features.append(Feature(n, SEQUENCE, str, max_len=max_len, time_column=time_of[n]))
      else:
        features.append(Feature(n, MULTI, str, max_len=max_len, **_vocabulary(col)))
      continue
    if col.type == "FLOAT" or (col.type == "INT" and (col.unique or 0) > MAX_INT_CATEGORIES):
      skewed = col.min is not None and col.min >= 0 and col.mean and col.max > SKEW_RATIO * col.mean
      features.append(Feature(n, NUMERIC, float if col.type == "FLOAT" else int,
                              normalize="log1p_zscore" if skewed else "zscore"))
      continue
    features.append(Feature(n, CATEGORICAL, int if col.type == "INT" else str, **_vocabulary(col)))

  categorical = [f.name for f in features if f.kind == CATEGORICAL]
  roles: Dict[str, str] = {}
  for role in ("user", "ad", "category"):
    found = _role(categorical, role, list(roles.values()))
    if found is None:
      left = [n for n in categorical if n not in roles.values()]
      if not left:
        raise InferError(f"no categorical column left for the {role} role; columns: {', '.join(names)}")
      found = left[0]
      notes.append(f"roles.{role}: no column name looks like a {role}; {found!r} is a guess")
    roles[role] = found
  notes.append(f"roles: user {roles['user']}, ad {roles['ad']}, category {roles['category']} (by their names)")
  notes.append("not known from statistics: min_count (frequency control of long-tail ids, e.g. 20 for the ad "
               "id), embedding_dim, int domains, buckets for numbers")
  for f in features:
    if f.uses_hashing:
      notes.append(f"{f.name}: {stats[f.name].unique:,} distinct values, hashed into {f.hash_buckets:,} buckets")
  return FeatureSpec(tuple(features), tuple(labels), **roles), notes


def _vocabulary(col: Column) -> Dict[str, int]:
  if (col.unique or 0) > HASH_ABOVE:
    return {"hash_buckets": 2 ** int(math.ceil(math.log2(2 * col.unique)))}
  return {}


def write_inferred_spec(data_root: str, out_path: str) -> Tuple[FeatureSpec, List[str]]:
  """Infers the spec of `data_root` and writes it, with the notes as comments, to `out_path`."""
  from spec.files import dump  # pylint: disable=import-outside-toplevel
  spec, notes = infer_spec(data_root)
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  dump(spec, out_path, header="\n".join(notes))
  return spec, notes
