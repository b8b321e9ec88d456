"""The feature spec: the one declarative description of a data set's columns.

Everything that needs a feature name, kind, vocabulary policy or embedding size derives it
from a `FeatureSpec`: the curated schema (`tfx_pipeline/schema.py`), the Transform
`preprocessing_fn`, the Keras inputs and embeddings (`models/dcn.py`), the raw-tensor serving
signature, the input check of `cscnn pipeline run` and the sample data generator.
`DEFAULT_SPEC` is the project's own data (the sample and the MovieLens conversion); a user's
data gets its spec from a file (`spec.load`, `pipeline run --spec FILE`, drafted by
`cscnn spec infer`).

Kinds
- ``categorical``: one value per impression (int or string). Transform maps it to an id in
  ``[0, vocab_size + oov_buckets)`` with an exact vocabulary (unknown values go to one of the
  OOV buckets), or in ``[0, hash_buckets)`` when ``hash_buckets`` is set (for vocabularies too
  large to materialise).
- ``multi``: a space-separated list of tokens (query words, title words, recently clicked
  categories). Transform maps each token as above, shifts ids by one so that 0 is padding, and
  pads / truncates to ``max_len``. The model mean-pools the embeddings of non-padding tokens.
  An empty list is written as the token ``EMPTY_LIST`` (``_``): every column has a value in
  every row (an empty CSV field is a missing feature, which ExampleValidator rejects), and
  Transform drops that token, so the list becomes all padding.
- ``numeric``: one number per impression (price, dwell time). Transform normalises it
  (``normalize``: ``zscore``, ``log1p`` = log(1 + max(x, 0)), ``log1p_zscore``, or ``none``)
  into a float the model feeds to x_0 beside the embeddings (DCN, eq. 7), or, with
  ``buckets`` set, cuts it at training-data quantiles into that many ids that are embedded
  like a categorical feature.
- ``sequence``: a behaviour sequence: space-separated ids (most recent first) with, when
  ``time_column`` is set, a parallel column of space-separated event times or ages (numbers).
  Transform maps the ids like ``multi`` (0 = padding, ``max_len`` kept) and the times to a
  float list of the same length (``<name>_time_xf``, 0 for padding). The model pools the ids
  like a ``multi`` feature; the times are carried for the sequence models to come.

Labels and roles: ``labels`` are the 0/1 task columns (the first is the one the CTR model
trains on; the others are carried through Transform as ``<label>_xf``). The roles name the
columns the pipeline needs by meaning: ``user`` (per-user AUC, eq. 13, groups by it), ``ad``
(the cold-ad flag counts its rows; its value finds the ad's image and x_v), ``category`` (the
CSCNN's category input and the evaluation slices).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

EMPTY_LIST = "_"              # a multi-valued feature's value when it has no tokens

CATEGORICAL = "categorical"
MULTI = "multi"
NUMERIC = "numeric"
SEQUENCE = "sequence"
KINDS = (CATEGORICAL, MULTI, NUMERIC, SEQUENCE)
TOKEN_KINDS = (MULTI, SEQUENCE)            # space-separated token lists, 0 = padding
NORMALIZATIONS = ("zscore", "log1p", "log1p_zscore", "none")
DTYPES = {"int": int, "str": str, "float": float}
ROLES = ("user", "ad", "category")
_TENSOR_DTYPES = {int: "int64", float: "float32", str: "string"}

# Outputs of Transform that are not embedded features:
IMAGE_KEY = "image_key"                  # int64 fingerprint of the raw ad id: finds the ad's image / x_v
AD_TRAIN_IMPRESSIONS = "ad_train_impressions"   # impressions of the ad in the training split
COLD_KEY = "ad_is_cold"                  # 1 if the ad has fewer than COLD_THRESHOLD training impressions
COLD_THRESHOLD = 5                       # paper 4.2: cold items have fewer than 5 training actions
# What the cold count counts: every training row of the ad (impression logs: SPEC, "fewer than 5
# training impressions") or its positive rows only (implicit-feedback data with sampled
# negatives, such as MovieLens: "fewer than 5 training interactions").
COLD_BY = ("impressions", "positives")
FINGERPRINT_BUCKETS = 2 ** 62


class SpecError(ValueError):
  """A feature spec that cannot be used; ``key`` is the path of the offending entry."""

  def __init__(self, key: Tuple[Any, ...], message: str):
    self.key = tuple(key)
    self.message = message
    super().__init__(f"{format_key(self.key)}: {message}" if self.key else message)


def format_key(key: Sequence[Any]) -> str:
  out = ""
  for k in key:
    out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
  return out


def transformed_name(name: str) -> str:
  """Key of a feature after Transform (the raw and transformed keys never collide)."""
  return f"{name}_xf"


def time_name(name: str) -> str:
  """Transform's key of a sequence feature's event times."""
  return f"{name}_time_xf"


@dataclasses.dataclass(frozen=True)
class Feature:
  """One raw input feature of an impression.

  Attributes:
    name: column name in the impressions CSV / tf.Example key.
    kind: ``categorical``, ``multi``, ``numeric`` or ``sequence``.
    dtype: ``int``, ``str`` or ``float``: the raw value type in the CSV and in tf.Examples
      (token lists are strings; numeric features are int or float).
    oov_buckets: OOV buckets for the exact vocabulary (ignored when hashing).
    min_count: values seen fewer than this many times in the training data are left out of the
      vocabulary and share the OOV bucket(s) (frequency control, as production CTR systems do
      for long-tail ids; TFT's ``frequency_threshold``). 1 keeps every value.
    hash_buckets: if set, hash values into this many buckets instead of a vocabulary.
    max_len: for token-list features, tokens kept per impression.
    embedding_dim: d_e for this feature; None means the model-wide default (paper: 4).
    normalize: numeric features: how Transform scales the value (see the module docstring).
    buckets: numeric features: if set, quantile buckets embedded as ids instead of a float.
    time_column: sequence features: the column of the events' times or ages, if any.
    against: sequence features: the candidate's categorical feature that the model reads the
      sequence against (e.g. a sequence of past categories against the ad's category); None:
      the spec's ad.
    domain: int features: the (min, max) that the schema enforces, if any.
    description: what the feature is, for humans.
  """

  name: str
  kind: str
  dtype: type
  oov_buckets: int = 1
  min_count: int = 1
  hash_buckets: Optional[int] = None
  max_len: int = 1
  embedding_dim: Optional[int] = None
  normalize: str = "zscore"
  buckets: Optional[int] = None
  time_column: Optional[str] = None
  against: Optional[str] = None
  domain: Optional[Tuple[int, int]] = None
  description: str = ""

  def __post_init__(self):
    def bad(field, message):
      raise SpecError((field,), f"feature {self.name!r}: {message}")
    if not isinstance(self.name, str) or not self.name:
      bad("name", "a feature needs a non-empty name")
    if self.kind not in KINDS:
      bad("kind", f"unknown kind {self.kind!r}; known: {', '.join(KINDS)}")
    if self.dtype not in DTYPES.values():
      bad("dtype", f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
    if self.kind in TOKEN_KINDS and self.dtype is not str:
      bad("dtype", f"{self.kind} features are space-separated strings (dtype str)")
    if self.kind == NUMERIC and self.dtype is str:
      bad("dtype", "numeric features are int or float")
    if self.kind != NUMERIC and self.dtype is float:
      bad("dtype", "float is for numeric features")
    if self.kind in TOKEN_KINDS and self.max_len < 1:
      bad("max_len", "max_len must be >= 1")
    if self.kind not in TOKEN_KINDS and self.max_len != 1:
      bad("max_len", f"max_len is for token lists ({', '.join(TOKEN_KINDS)})")
    if self.hash_buckets is not None and self.hash_buckets < 1:
      bad("hash_buckets", "hash_buckets must be >= 1")
    if self.min_count < 1:
      bad("min_count", f"min_count must be >= 1, got {self.min_count}")
    if self.min_count > 1 and self.hash_buckets is not None:
      bad("min_count", "min_count needs a vocabulary, not hash_buckets")
    if self.oov_buckets < 1 and self.hash_buckets is None:
      bad("oov_buckets", "need at least one OOV bucket for unknown values")
    if self.embedding_dim is not None and self.embedding_dim < 1:
      bad("embedding_dim", "embedding_dim must be >= 1")
    if self.normalize not in NORMALIZATIONS:
      bad("normalize", f"unknown normalization {self.normalize!r}; known: {', '.join(NORMALIZATIONS)}")
    if self.buckets is not None and (self.kind != NUMERIC or self.buckets < 2):
      bad("buckets", "buckets is for numeric features and must be >= 2")
    if self.kind == NUMERIC and self.hash_buckets is not None:
      bad("hash_buckets", "numeric features are not hashed (use buckets)")
    if self.time_column is not None and self.kind != SEQUENCE:
      bad("time_column", "time_column is for sequence features")
    if self.against is not None and self.kind != SEQUENCE:
      bad("against", "against is for sequence features")
    if self.domain is not None:
      if self.dtype is not int or len(self.domain) != 2 or self.domain[0] > self.domain[1]:
        bad("domain", f"domain is (min, max) of an int feature, got {self.domain!r}")

  @property
  def vocab_name(self) -> str:
    """File name of this feature's Transform vocabulary."""
    return f"{self.name}_vocab"

  @property
  def uses_hashing(self) -> bool:
    return self.hash_buckets is not None

  @property
  def embedded(self) -> bool:
    """Whether Transform turns it into ids that the model embeds (all but unbucketed numbers)."""
    return self.kind != NUMERIC or self.buckets is not None

  @property
  def padding_id(self) -> Optional[int]:
    """Id reserved for padding (token lists only)."""
    return 0 if self.kind in TOKEN_KINDS else None

  @property
  def shape(self) -> Tuple[int, ...]:
    """Per-impression shape of the transformed tensor."""
    return (self.max_len,) if self.kind in TOKEN_KINDS else ()

  @property
  def transformed_dtype(self) -> str:
    return "int64" if self.embedded else "float32"

  def to_dict(self) -> Dict[str, Any]:
    """The file form: only what differs from the defaults, dtype as its name."""
    out: Dict[str, Any] = {"name": self.name, "kind": self.kind,
                           "dtype": next(k for k, v in DTYPES.items() if v is self.dtype)}
    for field in dataclasses.fields(self):
      if field.name in out:
        continue
      value = getattr(self, field.name)
      if self.kind != NUMERIC and field.name == "normalize":
        continue
      if value != field.default:
        out[field.name] = list(value) if isinstance(value, tuple) else value
    return out

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "Feature":
    if not isinstance(d, Mapping):
      raise SpecError((), f"a feature is a mapping of options, got {d!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    for key in d:
      if key not in known:
        raise SpecError((key,), f"unknown option; known: {', '.join(sorted(known))}")
    for key in ("name", "kind"):
      if key not in d:
        raise SpecError((), f"a feature needs {key!r}")
    kwargs = dict(d)
    dtype = kwargs.pop("dtype", "float" if d["kind"] == NUMERIC else "str")
    if dtype not in DTYPES:
      raise SpecError(("dtype",), f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    for key in ("oov_buckets", "min_count", "hash_buckets", "max_len", "embedding_dim", "buckets"):
      if key in kwargs and kwargs[key] is not None and (
          isinstance(kwargs[key], bool) or not isinstance(kwargs[key], int)):
        raise SpecError((key,), f"must be an integer, got {kwargs[key]!r}")
    if kwargs.get("domain") is not None:
      kwargs["domain"] = tuple(kwargs["domain"])
    return cls(dtype=DTYPES[dtype], **kwargs)


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
  """A data set's columns: the features, the label(s) and the roles."""

  features: Tuple[Feature, ...]
  labels: Tuple[str, ...] = ("label",)
  user: str = "user_id"
  ad: str = "ad_id"
  category: str = "category_id"

  def __post_init__(self):
    object.__setattr__(self, "features", tuple(self.features))
    object.__setattr__(self, "labels", tuple(self.labels))
    if not self.features:
      raise SpecError(("features",), "a spec needs at least one feature")
    names = [f.name for f in self.features]
    for i, name in enumerate(names):
      if name in names[:i]:
        raise SpecError(("features", i, "name"), f"feature {name!r} is declared twice")
    if not self.labels:
      raise SpecError(("labels",), "a spec needs at least one label")
    for i, label in enumerate(self.labels):
      if not isinstance(label, str) or not label:
        raise SpecError(("labels", i), f"a label is a column name, got {label!r}")
      if label in self.labels[:i]:
        raise SpecError(("labels", i), f"label {label!r} is declared twice")
      if label in names:
        raise SpecError(("labels", i), f"{label!r} is both a label and a feature")
    for i, f in enumerate(self.features):
      if f.time_column is not None and (f.time_column in names or f.time_column in self.labels):
        raise SpecError(("features", i, "time_column"),
                        f"{f.time_column!r} is another column of the spec, not a time column")
    by_name = dict(zip(names, self.features))
    for i, f in enumerate(self.features):
      if f.against is not None and (f.against not in by_name or by_name[f.against].kind != CATEGORICAL):
        raise SpecError(("features", i, "against"),
                        f"feature {f.name!r}: against must name a categorical feature, got {f.against!r}")
    for role in ROLES:
      column = getattr(self, role)
      if column not in by_name:
        raise SpecError(("roles", role), f"role {role} points to {column!r}, which is not a feature; "
                                         f"features: {', '.join(names)}")
      if by_name[column].kind != CATEGORICAL:
        raise SpecError(("roles", role), f"role {role} needs a categorical feature; {column!r} is "
                                         f"{by_name[column].kind}")

  @property
  def label(self) -> str:
    """The label the CTR model trains on."""
    return self.labels[0]

  @property
  def user_feature(self) -> Feature:
    return self.feature(self.user)

  @property
  def category_feature(self) -> Feature:
    return self.feature(self.category)

  def feature(self, name: str) -> Feature:
    for f in self.features:
      if f.name == name:
        return f
    raise KeyError(f"{name!r} is not a feature of this spec; features: {', '.join(self.feature_names)}")

  @property
  def feature_names(self) -> Tuple[str, ...]:
    return tuple(f.name for f in self.features)

  def against(self, sequence: Feature) -> str:
    """The candidate feature a sequence feature is read against: its ``against``, else the ad."""
    return sequence.against or self.ad

  @property
  def time_columns(self) -> Tuple[str, ...]:
    return tuple(f.time_column for f in self.features if f.time_column)

  @property
  def raw_columns(self) -> Tuple[str, ...]:
    """Every column of an impressions CSV, in the order the project writes them."""
    return self.labels + self.feature_names + self.time_columns

  @property
  def serving_columns(self) -> Tuple[str, ...]:
    """The raw inputs of a served request (no label)."""
    return self.feature_names + self.time_columns

  def raw_dtype(self, column: str) -> type:
    """int, str or float: the raw type of any column of the spec."""
    if column in self.labels:
      return int
    if column in self.time_columns:
      return str
    return self.feature(column).dtype

  def raw_tensor_dtype(self, column: str) -> str:
    """The dtype name of a column's raw tensor (tf.Example / ``serving_raw``): int64, float32 or string."""
    return _TENSOR_DTYPES[self.raw_dtype(column)]

  def to_dict(self) -> Dict[str, Any]:
    return {"labels": list(self.labels),
            "roles": {role: getattr(self, role) for role in ROLES},
            "features": [f.to_dict() for f in self.features]}

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=True)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "FeatureSpec":
    if not isinstance(d, Mapping):
      raise SpecError((), f"a spec is a mapping with features, labels and roles; got {type(d).__name__}")
    for key in d:
      if key not in ("features", "labels", "roles"):
        raise SpecError((key,), "unknown key; known: features, labels, roles")
    raw_features = d.get("features")
    if not isinstance(raw_features, list):
      raise SpecError(("features",), "features is a list of feature mappings")
    features = []
    for i, item in enumerate(raw_features):
      try:
        features.append(Feature.from_dict(item))
      except SpecError as e:
        raise SpecError(("features", i) + e.key, e.message) from None
      except TypeError as e:
        raise SpecError(("features", i), str(e)) from None
    labels = d.get("labels", ["label"])
    if isinstance(labels, str):
      labels = [labels]
    if not isinstance(labels, list):
      raise SpecError(("labels",), "labels is a list of column names")
    roles = d.get("roles", {})
    if not isinstance(roles, Mapping):
      raise SpecError(("roles",), f"roles maps {', '.join(ROLES)} to feature names")
    for role in roles:
      if role not in ROLES:
        raise SpecError(("roles", role), f"unknown role; known: {', '.join(ROLES)}")
    missing = [r for r in ROLES if r not in roles]
    if missing:
      raise SpecError(("roles",), f"roles misses {', '.join(missing)}")
    return cls(tuple(features), tuple(labels), **roles)

  @classmethod
  def from_json(cls, text: str) -> "FeatureSpec":
    return cls.from_dict(json.loads(text))


def default_spec() -> FeatureSpec:
  """The project's own data: the synthetic sample and the MovieLens conversion."""
  return FeatureSpec(features=(
      Feature("user_id", CATEGORICAL, str, oov_buckets=10, description="user id"),
      Feature("user_city", CATEGORICAL, str, description="user's city"),
      Feature("user_age", CATEGORICAL, int, description="user's age bucket"),
      Feature("ad_id", CATEGORICAL, str, oov_buckets=1, min_count=20,
              description="ad id (ads with fewer than 20 training impressions share one id: their "
                          "CTR has to come from content, i.e. category, brand, title and image)"),
      Feature("category_id", CATEGORICAL, int, description="ad category id"),
      Feature("brand_id", CATEGORICAL, str, oov_buckets=5, description="ad brand"),
      Feature("hour", CATEGORICAL, int, domain=(0, 23), description="hour of the impression, 0-23"),
      Feature("weekday", CATEGORICAL, int, domain=(0, 6), description="day of week of the impression, 0-6"),
      Feature("query_words", MULTI, str, max_len=4, hash_buckets=1000,
              description="search query words (hashed)"),
      Feature("title_words", MULTI, str, max_len=6, oov_buckets=5, description="ad title words"),
      Feature("clicked_categories", MULTI, str, max_len=5,
              description="categories of the user's recent clicks"),
  ), labels=("label",), user="user_id", ad="ad_id", category="category_id")


DEFAULT_SPEC = default_spec()
