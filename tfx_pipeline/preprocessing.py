"""Transform's preprocessing_fn, derived entirely from the feature spec (`spec.FeatureSpec`).

Contract with the trainer (see `id_space`): a categorical feature becomes an int64 id of shape
[B]; a token list (multi, sequence) an int64 [B, max_len] with 0 as padding, and a sequence's
times a float32 [B, max_len]; a numeric feature a float32 [B] (normalised) or, bucketised, an
int64 id. Unknown values map to OOV buckets (exact vocabularies) or to their hash bucket (hashed
features): never an error.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_transform import tf_utils as tft_tf_utils

from spec import features as F
from spec.features import FeatureSpec


def _to_string(x: tf.Tensor) -> tf.Tensor:
  return x if x.dtype == tf.string else tf.strings.as_string(x)


def _dense_1d(x) -> tf.Tensor:
  """Raw features are FixedLen([1]) in the curated schema: [B, 1] -> [B]."""
  if isinstance(x, tf.SparseTensor):
    x = tf.sparse.to_dense(x, default_value="" if x.dtype == tf.string else 0)
  return tf.reshape(x, [-1])


def _ids(f: F.Feature, tokens, weights=None):
  """Ids of `tokens`; with `weights` (one per token) `min_count` counts each row with its weight."""
  if f.uses_hashing:
    return tf.strings.to_hash_bucket_fast(tokens, f.hash_buckets)
  return tft.compute_and_apply_vocabulary(tokens, num_oov_buckets=f.oov_buckets,
                                          frequency_threshold=f.min_count if f.min_count > 1 else None,
                                          vocab_filename=f.vocab_name, weights=weights)


def _ad_train_counts(ad: tf.Tensor, weights=None) -> tf.Tensor:
  """How many rows of each ad the analysed (training) data has, each counted with its weight
  (1 if `weights` is None); 0 for ads without any."""
  name = "ad_id_impressions" if weights is None else "ad_id_positives"
  path = tft.vocabulary(ad, weights=weights, vocab_filename=name, store_frequency=True)

  def frequency_table(asset_path):
    # Weighted frequencies are written as floats; a float table reads both forms.
    init = tf.lookup.TextFileInitializer(asset_path, key_dtype=tf.string, key_index=1,
                                         value_dtype=tf.float64, value_index=0, delimiter=" ")
    return tf.lookup.StaticHashTable(init, default_value=tf.constant(0, tf.float64))

  # tf.Transform's own table setup (as `tft.apply_vocabulary`'s): in the exported graph the table
  # is a tracked resource initialised once when the SavedModel loads, not on every call.
  counts, _ = tft_tf_utils.construct_and_lookup_table(frequency_table, path, ad)
  return tf.cast(tf.round(counts), tf.int64)


def feature_spec(custom_config) -> FeatureSpec:
  """The Transform's ``custom_config["spec"]`` (a `FeatureSpec.to_dict()`); the project's
  default spec when there is none."""
  d = (custom_config or {}).get("spec")
  return F.DEFAULT_SPEC if d is None else FeatureSpec.from_dict(d)


def _numeric(f: F.Feature, x: tf.Tensor) -> tf.Tensor:
  x = tf.cast(x, tf.float32)
  if f.normalize in ("log1p", "log1p_zscore"):
    x = tf.math.log1p(tf.maximum(x, 0.0))
  if f.buckets is not None:
    return tft.bucketize(x, f.buckets, name=f"{f.name}_buckets")
  if f.normalize in ("zscore", "log1p_zscore"):
    x = tft.scale_to_z_score(x, name=f"{f.name}_zscore")
  return x


def _tokens(x: tf.Tensor) -> tf.RaggedTensor:
  """Space-separated tokens per row (ragged [B, None]), without the empty-list token."""
  tokens = tf.strings.split(x)
  return tf.ragged.boolean_mask(tokens, tf.not_equal(tokens, F.EMPTY_LIST))


def _token_ids(f: F.Feature, x: tf.Tensor) -> tf.Tensor:
  ids = tf.ragged.map_flat_values(lambda t: _ids(f, t) + 1, _tokens(x))   # 0 = padding
  return ids.to_tensor(default_value=0, shape=[None, f.max_len])


def _times(f: F.Feature, x: tf.Tensor) -> tf.Tensor:
  """A sequence's times: the numbers of the time column, 0 for padding (the ids' positions)."""
  values = tf.ragged.map_flat_values(tf.strings.to_number, _tokens(x), out_type=tf.float32)
  return values.to_tensor(default_value=0.0, shape=[None, f.max_len])


def cold_by(custom_config) -> str:
  """The Transform's ``custom_config["cold_by"]`` (see `features.COLD_BY`), checked."""
  value = (custom_config or {}).get("cold_by", F.COLD_BY[0])
  if value not in F.COLD_BY:
    raise ValueError(f"cold_by must be one of {', '.join(F.COLD_BY)}; got {value!r}")
  return value


def preprocessing_fn(inputs, custom_config=None):
  """tf.Transform callback: raw features -> model ids (and the label).

  ``custom_config`` (the Transform component's): ``spec``, the data set's `FeatureSpec` as a
  dict (default: the project's spec), and ``cold_by``, ``impressions`` or ``positives``: what
  the cold-ad flag and the ad id's ``min_count`` count (default: impressions). By positives, an
  ad with fewer than ``min_count`` training positives shares the OOV id however many sampled
  negatives it was drawn as.
  """
  spec = feature_spec(custom_config)
  by = cold_by(custom_config)
  positive = None
  if by == "positives":
    if spec.label not in inputs:
      raise ValueError(f"cold_by=positives needs the label column {spec.label!r} in the analysed data")
    positive = tf.cast(_dense_1d(inputs[spec.label]) > 0, tf.float32)
  outputs = {}
  for f in spec.features:
    raw = _dense_1d(inputs[f.name])
    if f.kind == F.NUMERIC:
      value = _numeric(f, raw)
      outputs[F.transformed_name(f.name)] = tf.cast(value, tf.int64 if f.embedded else tf.float32)
      continue
    x = _to_string(raw)
    if f.kind in F.TOKEN_KINDS:
      ids = _token_ids(f, x)
    else:
      ids = _ids(f, x, weights=positive if f.name == spec.ad else None)
    outputs[F.transformed_name(f.name)] = tf.cast(ids, tf.int64)
    if f.time_column:
      outputs[F.time_name(f.name)] = _times(f, _to_string(_dense_1d(inputs[f.time_column])))
  ad = _to_string(_dense_1d(inputs[spec.ad]))
  outputs[F.IMAGE_KEY] = tf.strings.to_hash_bucket_fast(ad, F.FINGERPRINT_BUCKETS)
  counts = _ad_train_counts(ad)
  outputs[F.AD_TRAIN_IMPRESSIONS] = counts
  if positive is not None:
    counts = _ad_train_counts(ad, weights=positive)
  outputs[F.COLD_KEY] = tf.cast(counts < F.COLD_THRESHOLD, tf.int64)
  for label in spec.labels:
    if label in inputs:
      outputs[F.transformed_name(label)] = tf.cast(_dense_1d(inputs[label]), tf.int64)
  return outputs


def id_space(feature: F.Feature, tf_transform_output: tft.TFTransformOutput) -> int:
  """Number of distinct ids the transformed `feature` can take (the embedding's input_dim)."""
  if not feature.embedded:
    raise ValueError(f"feature {feature.name!r} is a number, not ids")
  if feature.buckets is not None:
    return feature.buckets
  if feature.uses_hashing:
    n = feature.hash_buckets
  else:
    n = tf_transform_output.vocabulary_size_by_name(feature.vocab_name) + feature.oov_buckets
  return n + (1 if feature.kind in F.TOKEN_KINDS else 0)


def id_spaces(spec: FeatureSpec, tf_transform_output: tft.TFTransformOutput):
  """`id_space` of every embedded feature of `spec`, by name."""
  return {f.name: id_space(f, tf_transform_output) for f in spec.features if f.embedded}


def lookup_ids(feature: F.Feature, raw_values, tf_transform_output: tft.TFTransformOutput):
  """Transform's id for raw values of a categorical `feature`, computed outside the Transform
  graph (e.g. for catalogue rows): the same vocabulary file and OOV hashing as
  `tft.compute_and_apply_vocabulary`."""
  values = tf.constant([str(v) for v in raw_values], tf.string)
  if feature.uses_hashing:
    return tf.strings.to_hash_bucket_fast(values, feature.hash_buckets).numpy()
  init = tf.lookup.TextFileInitializer(
      tf_transform_output.vocabulary_file_by_name(feature.vocab_name), tf.string,
      tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER)
  table = tf.lookup.StaticVocabularyTable(init, feature.oov_buckets)
  return table.lookup(values).numpy()


def fingerprint(ad_ids) -> "tf.Tensor":
  """The image key of raw ad ids: the same fingerprint as the Transform output `image_key`."""
  return tf.strings.to_hash_bucket_fast(tf.constant([str(a) for a in ad_ids], tf.string),
                                        F.FINGERPRINT_BUCKETS)
