"""The one declarative description of every input feature.

Everything that needs a feature name, kind, vocabulary policy or embedding size derives it
from `FEATURES` here: the curated schema (`schema.py`), the Transform `preprocessing_fn`, the
Keras inputs and embeddings (`models/dcn.py`), the raw-tensor serving signature, the sample
data generator's column order and the input validation of `cscnn pipeline run`.

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
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

LABEL_KEY = "label"
USER_KEY = "user_id"           # per-user AUC (eq. 13) groups by it
CATEGORY_KEY = "category_id"   # the slicing feature and the CSCNN category input
AD_KEY = "ad_id"               # how the visual vector x_v is looked up at serving time

EMPTY_LIST = "_"              # a multi-valued feature's value when it has no tokens

CATEGORICAL = "categorical"
MULTI = "multi"


@dataclasses.dataclass(frozen=True)
class Feature:
  """One raw input feature of an impression.

  Attributes:
    name: column name in the impressions CSV / tf.Example key.
    kind: ``categorical`` or ``multi``.
    dtype: ``int`` or ``str``: the raw value type in the CSV and in tf.Examples.
    oov_buckets: OOV buckets for the exact vocabulary (ignored when hashing).
    min_count: values seen fewer than this many times in the training data are left out of the
      vocabulary and share the OOV bucket(s) (frequency control, as production CTR systems do
      for long-tail ids; TFT's ``frequency_threshold``). 1 keeps every value.
    hash_buckets: if set, hash values into this many buckets instead of a vocabulary.
    max_len: for ``multi`` features, tokens kept per impression.
    embedding_dim: d_e for this feature; None means the model-wide default (paper: 4).
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
  description: str = ""

  def __post_init__(self):
    if self.kind not in (CATEGORICAL, MULTI):
      raise ValueError(f"feature {self.name!r}: kind must be {CATEGORICAL!r} or {MULTI!r}, got {self.kind!r}")
    if self.dtype not in (int, str):
      raise ValueError(f"feature {self.name!r}: dtype must be int or str, got {self.dtype!r}")
    if self.kind == MULTI and self.dtype is not str:
      raise ValueError(f"feature {self.name!r}: multi-valued features are space-separated strings")
    if self.kind == MULTI and self.max_len < 1:
      raise ValueError(f"feature {self.name!r}: max_len must be >= 1")
    if self.hash_buckets is not None and self.hash_buckets < 1:
      raise ValueError(f"feature {self.name!r}: hash_buckets must be >= 1")
    if self.min_count < 1:
      raise ValueError(f"feature {self.name!r}: min_count must be >= 1, got {self.min_count}")
    if self.min_count > 1 and self.hash_buckets is not None:
      raise ValueError(f"feature {self.name!r}: min_count needs a vocabulary, not hash_buckets")
    if self.oov_buckets < 1 and self.hash_buckets is None:
      raise ValueError(f"feature {self.name!r}: need at least one OOV bucket for unknown values")

  @property
  def vocab_name(self) -> str:
    """File name of this feature's Transform vocabulary."""
    return f"{self.name}_vocab"

  @property
  def uses_hashing(self) -> bool:
    return self.hash_buckets is not None

  @property
  def padding_id(self) -> Optional[int]:
    """Id reserved for padding (multi-valued features only)."""
    return 0 if self.kind == MULTI else None

  @property
  def shape(self) -> Tuple[int, ...]:
    """Per-impression shape of the transformed id tensor."""
    return (self.max_len,) if self.kind == MULTI else ()


FEATURES: Tuple[Feature, ...] = (
    Feature(USER_KEY, CATEGORICAL, str, oov_buckets=10, description="user id"),
    Feature("user_city", CATEGORICAL, str, description="user's city"),
    Feature("user_age", CATEGORICAL, int, description="user's age bucket"),
    Feature(AD_KEY, CATEGORICAL, str, oov_buckets=1, min_count=20,
            description="ad id (ads with fewer than 20 training impressions share one id: their "
                        "CTR has to come from content, i.e. category, brand, title and image)"),
    Feature(CATEGORY_KEY, CATEGORICAL, int, description="ad category id"),
    Feature("brand_id", CATEGORICAL, str, oov_buckets=5, description="ad brand"),
    Feature("hour", CATEGORICAL, int, description="hour of the impression, 0-23"),
    Feature("weekday", CATEGORICAL, int, description="day of week of the impression, 0-6"),
    Feature("query_words", MULTI, str, max_len=4, hash_buckets=1000,
            description="search query words (hashed)"),
    Feature("title_words", MULTI, str, max_len=6, oov_buckets=5, description="ad title words"),
    Feature("clicked_categories", MULTI, str, max_len=5,
            description="categories of the user's recent clicks"),
)

FEATURES_BY_NAME = {f.name: f for f in FEATURES}
RAW_COLUMNS: Tuple[str, ...] = (LABEL_KEY,) + tuple(f.name for f in FEATURES)


# Outputs of Transform that are not embedded features:
IMAGE_KEY = "image_key"                  # int64 fingerprint of the raw ad_id: finds the ad's image / x_v
AD_TRAIN_IMPRESSIONS = "ad_train_impressions"   # impressions of the ad in the training split
COLD_KEY = "ad_is_cold"                  # 1 if the ad has fewer than COLD_THRESHOLD training impressions
COLD_THRESHOLD = 5                       # paper 4.2: cold items have fewer than 5 training actions
# What the cold count counts: every training row of the ad (impression logs: SPEC, "fewer than 5
# training impressions") or its positive rows only (implicit-feedback data with sampled
# negatives, such as MovieLens: "fewer than 5 training interactions").
COLD_BY = ("impressions", "positives")
FINGERPRINT_BUCKETS = 2 ** 62


def transformed_name(name: str) -> str:
  """Key of a feature after Transform (the raw and transformed keys never collide)."""
  return f"{name}_xf"
