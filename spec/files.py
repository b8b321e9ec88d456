"""Feature spec files: YAML (JSON is valid YAML) in the form of `FeatureSpec.to_dict`.

    labels: [label]
    roles: {user: user_id, ad: ad_id, category: category_id}
    features:
      - {name: user_id, kind: categorical, dtype: str, oov_buckets: 10}
      - {name: price, kind: numeric, normalize: log1p_zscore}
      - {name: title_words, kind: multi, max_len: 6}

A spec that cannot be used stops with a `SpecFileError` naming the file, the line and the key.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import yaml

from spec.features import FeatureSpec, SpecError, format_key


DATA_SPEC_FILE = "spec.yaml"   # a data folder's own spec: `pipeline run` uses it when --spec is not given


class SpecFileError(ValueError):
  """A spec file that cannot be read or used: names the file, line and key."""


def _plain(node, key: Tuple[Any, ...], lines: Dict[Tuple[Any, ...], int]):
  """A composed YAML node as Python values, recording each key path's line (1-based)."""
  lines[key] = node.start_mark.line + 1
  if isinstance(node, yaml.MappingNode):
    out = {}
    for k_node, v_node in node.value:
      k = yaml.safe_load(yaml.serialize(k_node))
      out[k] = _plain(v_node, key + (k,), lines)
      lines[key + (k,)] = k_node.start_mark.line + 1   # the key's line, not its value's
    return out
  if isinstance(node, yaml.SequenceNode):
    return [_plain(v, key + (i,), lines) for i, v in enumerate(node.value)]
  return yaml.safe_load(yaml.serialize(node))


def _compose(text: str, path: str):
  try:
    return yaml.compose(text, Loader=yaml.SafeLoader)
  except yaml.YAMLError as e:
    mark = getattr(e, "problem_mark", None)
    where = f"{path}:{mark.line + 1}" if mark is not None else path
    raise SpecFileError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None


def column_location(path: str, spec: FeatureSpec, column: str) -> str:
  """``file:line: key`` of the entry of spec file `path` that names `column` (a feature, a
  label or a sequence's time column), for errors about the data."""
  with open(path, encoding="utf-8") as f:
    lines: Dict[Tuple[Any, ...], int] = {}
    _plain(_compose(f.read(), path), (), lines)
  key: Tuple[Any, ...] = ()
  if column in spec.labels:
    key = ("labels", spec.labels.index(column))
  for i, feature in enumerate(spec.features):
    if feature.name == column:
      key = ("features", i, "name")
    elif feature.time_column == column:
      key = ("features", i, "time_column")
  while key not in lines and key:
    key = key[:-1]
  return f"{path}:{lines.get(key, 1)}: {format_key(key) or 'spec'}"


def parse(text: str, path: str = "<spec>") -> FeatureSpec:
  """A spec from the text of a spec file; errors name `path`, the line and the key."""
  node = _compose(text, path)
  if node is None:
    raise SpecFileError(f"{path}: empty spec file")
  lines: Dict[Tuple[Any, ...], int] = {}
  data = _plain(node, (), lines)
  try:
    return FeatureSpec.from_dict(data)
  except SpecError as e:
    key = e.key
    while key not in lines and key:
      key = key[:-1]
    raise SpecFileError(f"{path}:{lines.get(key, 1)}: {format_key(e.key) or 'spec'}: {e.message}") from None


def load(path: str) -> FeatureSpec:
  """The spec in file `path`."""
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except OSError as e:
    raise SpecFileError(f"{path}: cannot read the spec file: {e.strerror}") from None
  return parse(text, path)


def dumps(spec: FeatureSpec, header: str = "") -> str:
  """The file form of `spec`: one feature per line, roles and labels first."""
  d = spec.to_dict()
  out = [f"# {line}" if line else "#" for line in header.splitlines()]
  out.append(f"labels: {yaml.safe_dump(d['labels'], default_flow_style=True).strip()}")
  out.append(f"roles: {yaml.safe_dump(d['roles'], default_flow_style=True, sort_keys=False).strip()}")
  out.append("features:")
  for f in d["features"]:
    out.append(f"  - {yaml.safe_dump(f, default_flow_style=True, sort_keys=False, width=1 << 16).strip()}")
  text = "\n".join(out) + "\n"
  return text


def dump(spec: FeatureSpec, path: str, header: str = "") -> str:
  with open(path, "w", encoding="utf-8") as f:
    f.write(dumps(spec, header))
  return path
