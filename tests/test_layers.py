"""Cross / CrossNet / PooledEmbedding against hand-computed numbers (paper eq. 5 and 7)."""

import numpy as np
import pytest

import keras

from models.layers import Cross, CrossNet, PooledEmbedding


def test_cross_layer_hand_computed():
  # z0 = zl = [1, 2], w = [0.5, 0.5], b = [0.1, 0.1]:
  # z0 (zl . w) + b + zl = [1, 2] * 1.5 + [0.1, 0.1] + [1, 2] = [2.6, 5.1]
  layer = Cross(kernel_initializer=keras.initializers.Constant(0.5),
                bias_initializer=keras.initializers.Constant(0.1))
  out = layer(np.array([[1.0, 2.0]], dtype="float32"))
  np.testing.assert_allclose(np.asarray(out), [[2.6, 5.1]], rtol=1e-6)


def test_cross_layer_uses_z0_and_zl_separately():
  # z0 = [1, 0], zl = [2, 3], w = [1, 1], b = 0: z0 * 5 + zl = [7, 3]
  layer = Cross(kernel_initializer="ones")
  out = layer((np.array([[1.0, 0.0]], "float32"), np.array([[2.0, 3.0]], "float32")))
  np.testing.assert_allclose(np.asarray(out), [[7.0, 3.0]], rtol=1e-6)


def test_cross_net_three_layers_hand_computed():
  # w = 1, b = 0, z0 = [1, 1]:  z1 = z0*2 + z0 = [3, 3];  z2 = z0*6 + z1 = [9, 9];
  # z3 = z0*18 + z2 = [27, 27]
  net = CrossNet(3, kernel_initializer="ones")
  out = net(np.ones((1, 2), "float32"))
  np.testing.assert_allclose(np.asarray(out), [[27.0, 27.0]], rtol=1e-6)
  assert len(net.cross_layers) == 3
  # a weight vector (not a matrix) and a bias per layer, as in DCN-v1
  assert [tuple(w.shape) for w in net.weights] == [(2,)] * 6


def test_cross_net_matches_numpy_with_random_weights():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(5, 7)).astype("float32")
  net = CrossNet(3)
  net(x)
  ws = [rng.normal(size=7).astype("float32") for _ in range(6)]
  net.set_weights(ws)
  z = x
  for li in range(3):
    w, b = ws[2 * li], ws[2 * li + 1]
    z = x * (z @ w)[:, None] + b + z
  np.testing.assert_allclose(np.asarray(net(x)), z, rtol=1e-5, atol=1e-5)


def test_cross_net_rejects_bad_arguments():
  with pytest.raises(ValueError, match="num_layers"):
    CrossNet(0)


def test_pooled_embedding_mean_ignores_padding():
  table = np.array([[9, 9], [1, 2], [3, 4], [5, 6]], "float32")  # row 0 = padding
  layer = PooledEmbedding(4, 2, padding_id=0)
  layer.build((None, 3))
  layer.set_weights([table])
  ids = np.array([[1, 2, 0], [3, 0, 0], [0, 0, 0]])
  np.testing.assert_allclose(np.asarray(layer(ids)), [[2, 3], [5, 6], [0, 0]], rtol=1e-6)


def test_layers_save_load_round_trip(tmp_path):
  inp = keras.Input((4,))
  ids = keras.Input((3,), dtype="int64")
  z = CrossNet(2, name="cn")(inp)
  e = PooledEmbedding(10, 4, name="pe")(ids)
  out = keras.layers.Dense(1)(keras.layers.Concatenate()([z, e]))
  model = keras.Model([inp, ids], out)
  x = np.random.default_rng(1).normal(size=(6, 4)).astype("float32")
  i = np.random.default_rng(2).integers(0, 10, size=(6, 3))
  before = np.asarray(model([x, i]))
  path = str(tmp_path / "m.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  np.testing.assert_array_equal(np.asarray(loaded([x, i])), before)
  assert loaded.get_layer("cn").get_config()["num_layers"] == 2
  assert loaded.get_layer("pe").get_config()["padding_id"] == 0


def _target_attention_numpy(layer, query_ids, history_ids):
  """DIN's activation unit written out in numpy from the layer's weights."""
  qe, he = layer.query_embeddings.numpy(), layer.history_embeddings.numpy()
  w1, b1 = [w.numpy() for w in layer.hidden.weights]
  w2, b2 = [w.numpy() for w in layer.score.weights]
  out = []
  for qi, hs in zip(query_ids, history_ids):
    q, ws, ks = qe[qi], [], []
    for h in hs:
      k = he[h]
      a = np.maximum(np.concatenate([q, k, q * k, q - k]) @ w1 + b1, 0) @ w2 + b2
      ws.append(float(a[0]) if h != layer.padding_id else 0.0)
      ks.append(k)
    real = [w for w, h in zip(ws, hs) if h != layer.padding_id]
    out.append(np.concatenate([np.sum([w * k for w, k in zip(ws, ks)], axis=0), [max(real) if real else 0.0]]))
  return np.array(out)


def _assert_round_trip(layer, query_ids, history_ids, expected, tmp_path):
  """A (query, history) layer saved in a model and loaded again gives the same outputs."""
  qi, hi = keras.Input((), dtype="int64"), keras.Input(history_ids.shape[1:], dtype="int64")
  path = str(tmp_path / f"{layer.name}.keras")
  keras.Model([qi, hi], layer((qi, hi))).save(path)
  np.testing.assert_allclose(np.asarray(keras.models.load_model(path)([query_ids, history_ids])), expected, rtol=1e-6)


def test_target_attention_matches_numpy_masks_padding_and_round_trips(tmp_path):
  from models.layers import TargetAttention
  layer = TargetAttention(query_vocab=5, history_vocab=6, dim=3, hidden_units=4, padding_id=0)
  q = np.array([1, 4, 2], np.int64)
  h = np.array([[1, 2, 0], [5, 5, 3], [0, 0, 0]], np.int64)     # padding, a repeat, all padding
  got = np.asarray(layer((q, h)))
  assert got.shape == (3, 4)
  np.testing.assert_allclose(got, _target_attention_numpy(layer, q, h), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got[2], 0.0)                          # no history: nothing pooled
  # a padding slot changes nothing, whatever its embedding
  np.testing.assert_allclose(np.asarray(layer((q[:1], h[:1, :2]))), got[:1], rtol=1e-5, atol=1e-6)
  _assert_round_trip(layer, q, h, got, tmp_path)
  with pytest.raises(ValueError, match="dim must be >= 1"):
    TargetAttention(5, 6, dim=0)


def test_history_match_is_the_dot_of_the_candidate_and_the_mean_history_and_round_trips(tmp_path):
  from models.layers import HistoryMatch
  layer = HistoryMatch(query_vocab=3, history_vocab=4, dim=2, padding_id=0)
  layer.build(None)
  layer.query_embeddings.assign(np.array([[0, 0], [1, 2], [-1, 1]], np.float32))
  layer.history_embeddings.assign(np.array([[100, 100], [1, 0], [0, 3], [2, 2]], np.float32))
  q = np.array([1, 2, 1], np.int64)
  h = np.array([[1, 2, 0], [3, 3, 1], [0, 0, 0]], np.int64)     # padding, a repeat, all padding
  got = np.asarray(layer((q, h)))
  # row 0: m = ([1,0] + [0,3]) / 2 = [0.5, 1.5], Q[1].m = 0.5 + 3 = 3.5
  # row 1: m = ([2,2] + [2,2] + [1,0]) / 3 = [5/3, 4/3], Q[2].m = -5/3 + 4/3 = -1/3
  # row 2: no history: m = 0, score 0 (the padding row's [100, 100] never counts)
  np.testing.assert_allclose(got, [[0.5, 1.5, 3.5], [5 / 3, 4 / 3, -1 / 3], [0, 0, 0]], rtol=1e-6)
  _assert_round_trip(layer, q, h, got, tmp_path)
  with pytest.raises(ValueError, match="dim must be >= 1"):
    HistoryMatch(3, 4, dim=0)
  with pytest.raises(ValueError, match="padding_id"):
    HistoryMatch(3, 4, padding_id=4)


def test_id_dropout_replaces_ids_at_its_rate_only_while_training_and_round_trips(tmp_path):
  from models.layers import IdDropout
  ids = np.arange(1, 20001, dtype="int64") % 7 + 1            # never the replacement id 0
  layer = IdDropout(0.25, replacement_id=0, seed=3)
  np.testing.assert_array_equal(np.asarray(layer(ids)), ids)                 # inference: identity
  out = np.asarray(layer(ids, training=True))
  hit = out != ids
  assert set(np.unique(out[hit])) == {0}                                      # hit -> the replacement
  assert abs(hit.mean() - 0.25) < 0.015, hit.mean()                          # 5,000 +- 61 expected
  np.testing.assert_array_equal(np.asarray(IdDropout(0.0, 0)(ids, training=True)), ids)
  for bad in ({"rate": 1.0, "replacement_id": 0}, {"rate": -0.1, "replacement_id": 0},
              {"rate": 0.1, "replacement_id": -1}):
    with pytest.raises(ValueError):
      IdDropout(**bad)
  inp = keras.Input((), dtype="int64")
  path = str(tmp_path / "d.keras")
  keras.Model(inp, IdDropout(0.5, 9, seed=1, name="drop")(inp)).save(path)
  loaded = keras.models.load_model(path)
  assert loaded.get_layer("drop").get_config()["replacement_id"] == 9
  np.testing.assert_array_equal(np.asarray(loaded(ids[:50])), ids[:50])
