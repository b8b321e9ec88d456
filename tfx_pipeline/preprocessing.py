"""Transform's preprocessing_fn, derived entirely from `features.FEATURES`.

Contract with the trainer (see `id_space`): a categorical feature becomes an int64 id of shape
[B]; a multi-valued feature an int64 [B, max_len] with 0 as padding. Unknown values map to OOV
buckets (exact vocabularies) or to their hash bucket (hashed features): never an error.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

from tfx_pipeline import features as F


def _to_string(x: tf.Tensor) -> tf.Tensor:
  return x if x.dtype == tf.string else tf.strings.as_string(x)


def _dense_1d(x) -> tf.Tensor:
  """Raw features are FixedLen([1]) in the curated schema: [B, 1] -> [B]."""
  if isinstance(x, tf.SparseTensor):
    x = tf.sparse.to_dense(x, default_value="" if x.dtype == tf.string else 0)
  return tf.reshape(x, [-1])


def _ids(f: F.Feature, tokens):
  if f.uses_hashing:
    return tf.strings.to_hash_bucket_fast(tokens, f.hash_buckets)
  return tft.compute_and_apply_vocabulary(tokens, num_oov_buckets=f.oov_buckets,
                                          frequency_threshold=f.min_count,
                                          vocab_filename=f.vocab_name)


def _ad_train_counts(ad: tf.Tensor, weights=None) -> tf.Tensor:
  """How many rows of each ad the analysed (training) data has, each counted with its weight
  (1 if `weights` is None); 0 for ads without any."""
  name = "ad_id_impressions" if weights is None else "ad_id_positives"
  path = tft.vocabulary(ad, weights=weights, vocab_filename=name, store_frequency=True)
  # Weighted frequencies are written as floats; a float table reads both forms.
  init = tf.lookup.TextFileInitializer(path, key_dtype=tf.string, key_index=1,
                                       value_dtype=tf.float64, value_index=0, delimiter=" ")
  counts = tf.lookup.StaticHashTable(init, default_value=tf.constant(0, tf.float64)).lookup(ad)
  return tf.cast(tf.round(counts), tf.int64)


def cold_by(custom_config) -> str:
  """The Transform's ``custom_config["cold_by"]`` (see `features.COLD_BY`), checked."""
  value = (custom_config or {}).get("cold_by", F.COLD_BY[0])
  if value not in F.COLD_BY:
    raise ValueError(f"cold_by must be one of {', '.join(F.COLD_BY)}; got {value!r}")
  return value


def preprocessing_fn(inputs, custom_config=None):
  """tf.Transform callback: raw features -> model ids (and the label).

  ``custom_config`` (the Transform component's): ``{"cold_by": "impressions" | "positives"}``
  chooses what the cold-ad flag counts (default: impressions).
  """
  by = cold_by(custom_config)
  outputs = {}
  for f in F.FEATURES:
    x = _to_string(_dense_1d(inputs[f.name]))
    if f.kind == F.MULTI:
      tokens = tf.strings.split(x)                      # ragged [B, None]
      tokens = tf.ragged.boolean_mask(tokens, tf.not_equal(tokens, F.EMPTY_LIST))
      ids = tf.ragged.map_flat_values(lambda t, f=f: _ids(f, t) + 1, tokens)   # 0 = padding
      ids = ids.to_tensor(default_value=0, shape=[None, f.max_len])
    else:
      ids = _ids(f, x)
    outputs[F.transformed_name(f.name)] = tf.cast(ids, tf.int64)
  ad = _to_string(_dense_1d(inputs[F.AD_KEY]))
  outputs[F.IMAGE_KEY] = tf.strings.to_hash_bucket_fast(ad, F.FINGERPRINT_BUCKETS)
  counts = _ad_train_counts(ad)
  outputs[F.AD_TRAIN_IMPRESSIONS] = counts
  if by == "positives":
    if F.LABEL_KEY not in inputs:
      raise ValueError(f"cold_by=positives needs the label column {F.LABEL_KEY!r} in the analysed data")
    positive = tf.cast(_dense_1d(inputs[F.LABEL_KEY]) > 0, tf.float32)
    counts = _ad_train_counts(ad, weights=positive)
  outputs[F.COLD_KEY] = tf.cast(counts < F.COLD_THRESHOLD, tf.int64)
  if F.LABEL_KEY in inputs:
    outputs[F.transformed_name(F.LABEL_KEY)] = tf.cast(_dense_1d(inputs[F.LABEL_KEY]), tf.int64)
  return outputs


def id_space(feature: F.Feature, tf_transform_output: tft.TFTransformOutput) -> int:
  """Number of distinct ids the transformed `feature` can take (the embedding's input_dim)."""
  if feature.uses_hashing:
    n = feature.hash_buckets
  else:
    n = tf_transform_output.vocabulary_size_by_name(feature.vocab_name) + feature.oov_buckets
  return n + (1 if feature.kind == F.MULTI else 0)


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
