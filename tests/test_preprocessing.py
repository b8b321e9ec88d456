"""Transform's preprocessing_fn run by tf.Transform on Beam (in memory) on a tiny data set."""

import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam

from spec import features as F
from tfx_pipeline.preprocessing import id_space, preprocessing_fn
from tfx_pipeline.schema import make_schema

S = F.DEFAULT_SPEC


def _row(label, user, ad, cat, query="q1 q2", title="t1", clicked="1 2"):
  return {"label": [label], "user_id": [user], "user_city": [b"c1"], "user_age": [2],
          "ad_id": [ad], "category_id": [cat], "brand_id": [b"b1"], "hour": [3], "weekday": [1],
          "query_words": [query], "title_words": [title], "clicked_categories": [clicked]}


N_A1 = max(6, S.feature("ad_id").min_count)   # a1 clears the ad id's frequency control
TRAIN = ([_row(1, b"u1", b"a1", 1)] * N_A1 + [_row(0, b"u2", b"a2", 2, title="t1 t2 t3 t4 t5 t6 t7 t8")] * 2
         + [_row(0, b"u1", b"a3", 1, query="", clicked="")])
TEST = [_row(0, b"u_new", b"a_new", 9, clicked=F.EMPTY_LIST.encode()), _row(1, b"u1", b"a1", 1, clicked=b"2 _ 77")]


@pytest.fixture(scope="module")
def transformed():
  metadata = tft.DatasetMetadata(make_schema())
  with tempfile.TemporaryDirectory() as tmp, tft_beam.Context(temp_dir=tmp):
    (_, _), fn = (TRAIN, metadata) | tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)
    test, _ = ((TEST, metadata), fn) | tft_beam.TransformDataset()
    out_dir = tmp + "/tft"
    _ = fn | tft_beam.WriteTransformFn(out_dir)
    output = tft.TFTransformOutput(out_dir)
    sizes = {f.name: id_space(f, output) for f in S.features}
  return test, sizes


def test_unknown_values_go_to_oov_buckets(transformed):
  test, sizes = transformed
  new, known = test
  ad = S.feature("ad_id")
  # min_count > 2: the vocabulary holds a1 only (a2 and a3 are too rare); unknown and rare ids
  # land in [1, 1 + oov_buckets)
  assert ad.min_count > 2
  assert sizes["ad_id"] == 1 + ad.oov_buckets
  assert 1 <= new[F.transformed_name("ad_id")] < 1 + ad.oov_buckets
  assert known[F.transformed_name("ad_id")] == 0
  assert 0 <= new[F.transformed_name("user_id")] < sizes["user_id"]


def test_multi_valued_features_are_padded_and_truncated(transformed):
  test, sizes = transformed
  known = test[1]
  title = known[F.transformed_name("title_words")]
  assert title.shape == (S.feature("title_words").max_len,)
  assert title[0] > 0 and np.all(title[1:] == 0)                  # one token, then padding
  query = known[F.transformed_name("query_words")]
  assert np.all(query[:2] > 0) and np.all(query[2:] == 0)
  assert np.all(query[:2] <= S.feature("query_words").hash_buckets)


def test_the_empty_list_token_is_padding_not_a_value(transformed):
  test, sizes = transformed
  new, known = test
  history = F.transformed_name("clicked_categories")
  assert np.all(new[history] == 0)                                   # "_": nothing, all padding
  # "2 _ 77": 2 (in the vocabulary) and 77 (unknown: an OOV id, not padding); "_" dropped
  assert known[history][0] > 0 and known[history][1] > 0 and np.all(known[history][2:] == 0)
  assert known[history][0] != known[history][1]


def test_ad_impression_counts_cold_flag_and_image_key(transformed):
  test, _ = transformed
  new, known = test
  assert known[F.AD_TRAIN_IMPRESSIONS] == N_A1 and known[F.COLD_KEY] == 0
  assert new[F.AD_TRAIN_IMPRESSIONS] == 0 and new[F.COLD_KEY] == 1
  expected = tf.strings.to_hash_bucket_fast(["a1"], F.FINGERPRINT_BUCKETS).numpy()[0]
  assert known[F.IMAGE_KEY] == expected


# cold_by=positives (implicit feedback with sampled negatives): a_pop has 8 training rows but 2
# positives, so it is warm by impressions and cold by positives; a1 has N_A1 positives; a_neg
# has N_A1 + 1 rows, enough for an ad id of its own by impressions, but 1 positive.
TRAIN_P = ([_row(1, b"u1", b"a1", 1)] * N_A1 + [_row(1, b"u2", b"a_pop", 2)] * 2
           + [_row(0, b"u3", b"a_pop", 2)] * 6 + [_row(1, b"u4", b"a_neg", 4)] + [_row(0, b"u5", b"a_neg", 4)] * N_A1)
TEST_P = [_row(0, b"u1", b"a1", 1), _row(1, b"u2", b"a_pop", 2), _row(0, b"u9", b"a_new", 3),
          _row(0, b"u4", b"a_neg", 4)]


def _analyse(train, test, custom_config, metadata=None):
  metadata = metadata or tft.DatasetMetadata(make_schema())
  fn_ = lambda inputs: preprocessing_fn(inputs, custom_config)  # noqa: E731
  tmp = tempfile.mkdtemp()
  with tft_beam.Context(temp_dir=tmp):
    (_, _), fn = (train, metadata) | tft_beam.AnalyzeAndTransformDataset(fn_)
    out, _ = ((test, metadata), fn) | tft_beam.TransformDataset()
    _ = fn | tft_beam.WriteTransformFn(tmp + "/tft")
  return out, tft.TFTransformOutput(tmp + "/tft")


@pytest.mark.slow  # a tf.Transform analysis on Beam per case: ~14 s
@pytest.mark.parametrize("cold_by, expected, vocabulary", [("impressions", [0, 0, 1, 0], [b"a1", b"a_neg"]),
                                                          ("positives", [0, 1, 1, 1], [b"a1"])])
def test_cold_flag_and_ad_min_count_count_impressions_or_positives(cold_by, expected, vocabulary):
  """The cold flag and the ad id's min_count count the same thing: by positives a_neg, drawn
  N_A1 times as a negative, shares the OOV id with the unseen a_new."""
  out, output = _analyse(TRAIN_P, TEST_P, {"cold_by": cold_by})
  assert [int(r[F.COLD_KEY]) for r in out] == expected
  assert [int(r[F.AD_TRAIN_IMPRESSIONS]) for r in out] == [N_A1, 8, 0, N_A1 + 1]   # always every row
  ad = S.feature("ad_id")
  assert sorted(output.vocabulary_by_name(ad.vocab_name)) == vocabulary
  ids = [int(r[F.transformed_name("ad_id")]) for r in out]
  oov = len(vocabulary)                                     # one OOV bucket after the vocabulary
  assert ids[0] < oov and ids[2] == oov
  assert (ids[3] == oov) == (cold_by == "positives")


@pytest.fixture(scope="module")
def positives_layer():
  """The Transform layer of a cold_by=positives analysis (two count tables) and raw serving
  inputs (no label) for TEST_P."""
  _, output = _analyse(TRAIN_P, TEST_P, {"cold_by": "positives"})
  raw = {k: tf.constant([[r[k][0]] for r in TEST_P], tf.string if isinstance(v[0], (bytes, str)) else tf.int64)
         for k, v in TEST_P[0].items() if k != S.label}
  return output.transform_features_layer(), raw


@pytest.mark.slow  # tf.Transform on Beam: ~19 s
def test_cold_by_positives_needs_no_label_at_serving_time(positives_layer):
  """The serving signatures run the Transform layer without the label: the positives count was
  fixed by the analysis, so the cold flag must still come out, and right."""
  layer, raw = positives_layer
  transformed = layer(raw)
  assert transformed[F.COLD_KEY].numpy().reshape(-1).tolist() == [0, 1, 1, 1]
  assert transformed[F.AD_TRAIN_IMPRESSIONS].numpy().reshape(-1).tolist() == [N_A1, 8, 0, N_A1 + 1]


@pytest.mark.slow  # shares the analysis above
def test_count_tables_are_initialised_at_load_not_per_call(positives_layer):
  """The ad count tables are set up as tf.Transform sets up its vocabularies: no table
  initialiser in the graph a served call runs (it reread the vocabulary file every request)."""
  layer, raw = positives_layer
  graph = tf.function(layer).get_concrete_function(raw).graph.as_graph_def()
  ops = [n.op for n in graph.node] + [n.op for f in graph.library.function for n in f.node_def]
  assert "LookupTableFindV2" in ops
  assert not [op for op in ops if op.startswith("InitializeTable")]


def _ad_train_counts_per_call(ad, weights=None):
  """The count table as it was built before: a plain StaticHashTable inside preprocessing_fn,
  whose initialiser became part of every call of the Transform layer."""
  name = "ad_id_impressions" if weights is None else "ad_id_positives"
  path = tft.vocabulary(ad, weights=weights, vocab_filename=name, store_frequency=True)
  init = tf.lookup.TextFileInitializer(path, key_dtype=tf.string, key_index=1,
                                       value_dtype=tf.float64, value_index=0, delimiter=" ")
  counts = tf.lookup.StaticHashTable(init, default_value=tf.constant(0, tf.float64)).lookup(ad)
  return tf.cast(tf.round(counts), tf.int64)


@pytest.mark.slow  # one more tf.Transform analysis: ~20 s
def test_transform_layer_outputs_equal_those_of_the_per_call_table(positives_layer, monkeypatch):
  """Every output of the Transform layer (the model's inputs, the counts, the cold flag) equals
  what the layer with the per-call table gave, so a served model's scores cannot move."""
  from tfx_pipeline import preprocessing
  layer, raw = positives_layer
  monkeypatch.setattr(preprocessing, "_ad_train_counts", _ad_train_counts_per_call)
  _, before = _analyse(TRAIN_P, TEST_P, {"cold_by": "positives"})
  want = before.transform_features_layer()(raw)
  got = layer(raw)
  assert set(got) == set(want) and F.COLD_KEY in got
  for k, v in want.items():
    np.testing.assert_array_equal(got[k].numpy(), v.numpy(), err_msg=k)


def test_cold_by_rejects_unknown_values():
  with pytest.raises(ValueError, match="cold_by must be one of impressions, positives; got 'clicks'"):
    _analyse(TRAIN_P, TEST_P, {"cold_by": "clicks"})


# A data set with its own column names: roles on other columns, a string category, a numeric
# price (log1p then z-score), a bucketised dwell time, a behaviour sequence with its times, two labels.
OTHER_SPEC = F.FeatureSpec.from_dict({
    "labels": ["click", "buy"],
    "roles": {"user": "customer", "ad": "item", "category": "ptype"},
    "features": [
        {"name": "customer", "kind": "categorical"},
        {"name": "item", "kind": "categorical"},
        {"name": "ptype", "kind": "categorical"},
        {"name": "price", "kind": "numeric", "normalize": "log1p_zscore"},
        {"name": "dwell", "kind": "numeric", "dtype": "int", "normalize": "none", "buckets": 2},
        {"name": "history", "kind": "sequence", "max_len": 3, "time_column": "history_age"},
    ]})


def _other_row(click, customer, item, price, dwell, history, ages):
  return {"click": [click], "buy": [0], "customer": [customer], "item": [item], "ptype": [b"shoes"],
          "price": [price], "dwell": [dwell], "history": [history], "history_age": [ages]}


OTHER_TRAIN = [_other_row(1, b"c1", b"i1", 0.0, 1, b"i2 i3", b"5 9"),
               _other_row(0, b"c2", b"i2", float(np.e - 1), 2, b"i1", b"2"),
               _other_row(1, b"c1", b"i3", float(np.e ** 2 - 1), 30, b"_", b"_"),
               _other_row(0, b"c2", b"i1", float(np.e - 1), 40, b"i3 i1 i2 i9", b"1 2 3 4")]


@pytest.mark.slow  # tf.Transform on Beam: ~11 s
def test_a_spec_with_other_columns_numbers_and_a_sequence():
  from tfx_pipeline.preprocessing import id_spaces
  metadata = tft.DatasetMetadata(make_schema(OTHER_SPEC))
  out, output = _analyse(OTHER_TRAIN, OTHER_TRAIN, {"spec": OTHER_SPEC.to_dict()}, metadata)
  # log1p(price) = 0, 1, 2, 1: mean 1, population std sqrt(1/2)
  np.testing.assert_allclose([float(r["price_xf"]) for r in out], [-np.sqrt(2), 0, np.sqrt(2), 0], atol=1e-5)
  dwell = [int(r["dwell_xf"]) for r in out]
  assert set(dwell) == {0, 1} and dwell == sorted(dwell)          # 2 quantile buckets of 1, 2, 30, 40
  history = np.stack([r["history_xf"] for r in out])
  assert history.shape == (4, 3)
  assert (history[2] == 0).all() and (history[1][1:] == 0).all() and (history[0][2] == 0)
  assert (history[0][:2] > 0).all() and (history[3] > 0).all()   # truncated to max_len = 3
  np.testing.assert_allclose(np.stack([r["history_time_xf"] for r in out]),
                             [[5, 9, 0], [2, 0, 0], [0, 0, 0], [1, 2, 3]])
  assert [int(r["click_xf"]) for r in out] == [1, 0, 1, 0] and [int(r["buy_xf"]) for r in out] == [0] * 4
  assert int(out[0]["ad_train_impressions"]) == 2                 # item i1: the ad role's column
  sizes = id_spaces(OTHER_SPEC, output)
  assert sizes["dwell"] == 2 and "price" not in sizes
  assert sizes["ptype"] == 1 + 1 and sizes["history"] == 4 + 1 + 1   # vocabulary + OOV (+ padding)
