"""Category-specific attention (eq. 8-11) and its baselines, checked by hand on tiny inputs."""

import numpy as np
import pytest
import tensorflow as tf

import keras

from models.attention import AttentionConfig, ChannelAttention, ConvAttention, SpatialAttention


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def _const(v):
  return keras.initializers.Constant(v)


# ---- channel attention (eq. 10) -------------------------------------------------------------

def test_channel_attention_by_hand_two_categories():
  # C = 4, r = 4 -> hidden 1; C' = 2; all MLP weights 1; F = 0.5 everywhere (4x4 map).
  # category 0, prior [0, 0]: MLP([.5,.5,.5,.5, 0, 0]) = relu(2) * 1 = 2 per channel;
  #   avg and max paths are equal -> M_c = sigmoid(2 + 2) = sigmoid(4)
  # category 1, prior [1, 1]: relu(2 + 2) = 4 -> M_c = sigmoid(8)
  layer = ChannelAttention(reduction=4, num_categories=2, prior_dim=2, kernel_initializer="ones")
  f = np.full((2, 4, 4, 4), 0.5, "float32")
  cat = np.array([0, 1])
  layer.build([f.shape, cat.shape])
  layer.prior.assign(np.array([[0, 0], [1, 1]], "float32"))
  m = np.asarray(layer((f, cat)))
  assert m.shape == (2, 1, 1, 4)
  np.testing.assert_allclose(m[0].ravel(), [_sigmoid(4.0)] * 4, rtol=1e-6)
  np.testing.assert_allclose(m[1].ravel(), [_sigmoid(8.0)] * 4, rtol=1e-6)


def test_same_image_same_prior_same_attention():
  # 32 channels -> 8 hidden units: with the 2 of an 8-channel map, random weights left every
  # hidden ReLU dead (M_c = 0.5, no prior reaches it) for 3 of 200 seeds.
  layer = ChannelAttention(num_categories=2, prior_dim=3)
  f = np.random.default_rng(0).normal(size=(1, 4, 4, 32)).astype("float32")
  f2 = np.concatenate([f, f])
  cat = np.array([0, 1])
  layer.build([f2.shape, cat.shape])
  layer.prior.assign(np.array([[0.3, -0.2, 0.5]] * 2, "float32"))
  m = np.asarray(layer((f2, cat)))
  np.testing.assert_array_equal(m[0], m[1])
  layer.prior.assign(np.array([[0.3, -0.2, 0.5], [-1.0, 2.0, 0.0]], "float32"))
  m = np.asarray(layer((f2, cat)))
  assert np.abs(m[0] - m[1]).max() > 1e-3


def _mlp(x, w1, w2):
  return np.maximum(x @ w1, 0) @ w2


def test_se_matches_reference_definition():
  """SE (Hu et al.): sigmoid(W2 relu(W1 AvgPool(F)))."""
  rng = np.random.default_rng(1)
  f = rng.normal(size=(3, 4, 4, 8)).astype("float32")
  layer = ChannelAttention(reduction=4, pooling=("avg",))
  m = np.asarray(layer(f))
  w1, w2 = layer.fc1.kernel.numpy(), layer.fc2.kernel.numpy()
  ref = _sigmoid(_mlp(f.mean(axis=(1, 2)), w1, w2))
  np.testing.assert_allclose(m[:, 0, 0, :], ref, rtol=1e-5, atol=1e-6)


def test_cbam_channel_matches_reference_definition():
  """CBAM channel gate: sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F))), one shared MLP."""
  rng = np.random.default_rng(2)
  f = rng.normal(size=(3, 4, 4, 8)).astype("float32")
  layer = ChannelAttention(reduction=4)
  m = np.asarray(layer(f))
  w1, w2 = layer.fc1.kernel.numpy(), layer.fc2.kernel.numpy()
  ref = _sigmoid(_mlp(f.mean(axis=(1, 2)), w1, w2) + _mlp(f.max(axis=(1, 2)), w1, w2))
  np.testing.assert_allclose(m[:, 0, 0, :], ref, rtol=1e-5, atol=1e-6)


# ---- spatial attention (eq. 11) -------------------------------------------------------------

def _bilinear_2_to_4(a, b):
  # half-pixel centres: output x maps to input (x + 0.5) / 2 - 0.5 = -.25, .25, .75, 1.25,
  # clamped to [0, 1]: [a, .75a + .25b, .25a + .75b, b]
  return np.array([a, 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b, b])


def test_spatial_prior_resize_is_bilinear():
  layer = SpatialAttention(num_categories=1, prior_size=(2, 2))
  layer.build([(None, 4, 4, 3), (None,)])
  prior = np.array([[0.0, 1.0], [2.0, 3.0]], "float32")
  layer.prior.assign(prior[None])
  got = np.asarray(layer.resized_prior(np.array([0]), 4, 4))[0, :, :, 0]
  rows = np.stack([_bilinear_2_to_4(*prior[0]), _bilinear_2_to_4(*prior[1])])   # (2, 4)
  expected = np.stack([_bilinear_2_to_4(rows[0, j], rows[1, j]) for j in range(4)], axis=1)
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_spatial_attention_by_hand_reads_the_prior():
  # Conv kernel: 1 at the centre of the prior channel, 0 elsewhere -> M_s = sigmoid(resize(A_s^k)).
  kernel = np.zeros((7, 7, 3, 1), "float32")
  kernel[3, 3, 2, 0] = 1.0
  layer = SpatialAttention(num_categories=2, prior_size=(2, 2))
  f = np.ones((2, 4, 4, 5), "float32")
  cat = np.array([0, 1])
  layer.build([f.shape, cat.shape])
  layer.conv.kernel.assign(kernel)
  layer.prior.assign(np.array([[[0, 0], [0, 0]], [[4, 4], [-4, -4]]], "float32"))
  m = np.asarray(layer((f, cat)))[..., 0]
  np.testing.assert_allclose(m[0], np.full((4, 4), 0.5), rtol=1e-6)
  col = _sigmoid(_bilinear_2_to_4(4.0, -4.0))
  np.testing.assert_allclose(m[1], np.repeat(col[:, None], 4, axis=1), rtol=1e-5)


def _conv_same(x, k):
  """Plain 'same' 2-D convolution (cross-correlation) of x (H, W, Cin) with k (kh, kw, Cin, 1)."""
  kh, kw = k.shape[:2]
  p = np.pad(x, ((kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
  out = np.zeros(x.shape[:2])
  for i in range(x.shape[0]):
    for j in range(x.shape[1]):
      out[i, j] = (p[i:i + kh, j:j + kw, :] * k[..., 0]).sum()
  return out


def test_cbam_spatial_and_module_match_reference_definition():
  """CBAM: F' = M_c(F) F, M_s = sigmoid(conv7x7([MaxPool_c(F'), AvgPool_c(F')])), F'' = M_s F'."""
  rng = np.random.default_rng(3)
  f = rng.normal(size=(2, 6, 6, 8)).astype("float32")
  module = ConvAttention("cbam")
  out = np.asarray(module((f, np.zeros(2, "int64"))))
  w1, w2 = module.channel.fc1.kernel.numpy(), module.channel.fc2.kernel.numpy()
  k = module.spatial_gate.conv.kernel.numpy()
  for b in range(2):
    mc = _sigmoid(_mlp(f[b].mean((0, 1)), w1, w2) + _mlp(f[b].max((0, 1)), w1, w2))
    f1 = f[b] * mc
    ms = _sigmoid(_conv_same(np.stack([f1.max(-1), f1.mean(-1)], -1), k))
    np.testing.assert_allclose(out[b], f1 * ms[..., None], rtol=1e-4, atol=1e-5)


def test_spatial_norm_is_batch_norm_between_the_conv_and_the_sigmoid():
  """--spatial-norm (the official CBAM code's BN after the 7x7 conv): in training the gate's
  logits are normalised over batch and positions (mean 0, variance v / (v + 1e-3)); in inference
  before any update the moving statistics are 0 and 1, so the logits are the conv's / sqrt(1.001)."""
  rng = np.random.default_rng(6)
  f = rng.normal(size=(3, 5, 5, 8)).astype("float32")
  plain, normed = SpatialAttention(), SpatialAttention(normalize=True)
  plain.build(f.shape)
  normed.build(f.shape)
  normed.conv.kernel.assign(plain.conv.kernel)
  gate = np.asarray(plain(f))
  conv = np.log(gate / (1 - gate))   # the conv's output, by the sigmoid's inverse
  logits = np.asarray(normed(f, training=True))
  logits = np.log(logits / (1 - logits))
  var = conv.var()
  np.testing.assert_allclose(logits, (conv - conv.mean()) / np.sqrt(var + 1e-3), rtol=1e-3, atol=1e-3)
  fresh = SpatialAttention(normalize=True)
  fresh.build(f.shape)
  fresh.conv.kernel.assign(plain.conv.kernel)
  inference = np.asarray(fresh(f, training=False))
  np.testing.assert_allclose(np.log(inference / (1 - inference)), conv / np.sqrt(1.001), rtol=1e-3, atol=1e-4)
  for flag in (True, False):   # ConvAttention passes the option on; the default has no BN
    module = ConvAttention("cbam", spatial_norm=flag)
    module((f, np.zeros(3, "int64")))
    assert (module.spatial_gate.norm is not None) == flag


# ---- the CSCNN module (eq. 8-9) -------------------------------------------------------------

def test_cscnn_categories_differ_only_through_priors():
  module = ConvAttention("cscnn", num_categories=2, channel_prior=3, spatial_prior=2)
  f = np.random.default_rng(4).normal(size=(1, 4, 4, 8)).astype("float32")
  f2 = np.concatenate([f, f])
  cat = np.array([0, 1])
  module.build([f2.shape, cat.shape])
  module.channel.prior.assign(np.ones((2, 3), "float32"))
  module.spatial_gate.prior.assign(np.ones((2, 2, 2), "float32"))
  out = np.asarray(module((f2, cat)))
  np.testing.assert_array_equal(out[0], out[1])
  module.spatial_gate.prior.assign(np.array([np.ones((2, 2)), -np.ones((2, 2))], "float32"))
  out = np.asarray(module((f2, cat)))
  assert np.abs(out[0] - out[1]).max() > 1e-3


def test_gradients_reach_both_priors():
  module = ConvAttention("cscnn", num_categories=3, channel_prior=4, spatial_prior=3)
  # 32 channels, as above: with 8, category 2's channel prior got no gradient for 18 of 200
  # seeds because all hidden ReLUs of the channel MLP were dead for that example.
  f = tf.constant(np.random.default_rng(5).normal(size=(2, 6, 6, 32)).astype("float32"))
  cat = tf.constant([0, 2], tf.int64)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(module((f, cat)) ** 2)
  g_c, g_s = tape.gradient(loss, [module.channel.prior, module.spatial_gate.prior])
  g_c, g_s = tf.convert_to_tensor(g_c).numpy(), tf.convert_to_tensor(g_s).numpy()
  for g in (g_c, g_s):
    assert np.abs(g[0]).sum() > 0 and np.abs(g[2]).sum() > 0
    assert np.abs(g[1]).sum() == 0, "an unused category's prior gets no gradient"


def test_gate_scale_multiplies_the_sigmoid_by_hand():
  # the channel case of test_channel_attention_by_hand_two_categories with gate_scale 2:
  # M_c = 2 sigmoid(4); spatial: all-ones 1x1 kernel on [max, mean] = [1, 1] -> 2 sigmoid(2)
  channel = ChannelAttention(reduction=4, num_categories=2, prior_dim=2, kernel_initializer="ones", gate_scale=2.0)
  f = np.full((1, 4, 4, 4), 0.5, "float32")
  channel.build([f.shape, (1,)])
  channel.prior.assign(np.zeros((2, 2), "float32"))
  np.testing.assert_allclose(np.asarray(channel((f, np.array([0])))).ravel(), [2 * _sigmoid(4.0)] * 4, rtol=1e-6)
  spatial = SpatialAttention(kernel_size=1, kernel_initializer="ones", gate_scale=2.0)
  m = np.asarray(spatial(np.ones((1, 3, 3, 2), "float32")))
  np.testing.assert_allclose(m.ravel(), [2 * _sigmoid(2.0)] * 9, rtol=1e-6)


@pytest.mark.parametrize("kind", ["se", "se_prior", "cbam_channel", "cbam", "cscnn"])
@pytest.mark.parametrize("spatial_norm", [False, True])
def test_identity_start_passes_features_through_and_learns_at_once(kind, spatial_norm):
  """F'' = F exactly at the start, in training and inference mode; the paper's start scales
  them (about 1/4 for cbam and cscnn); the first gradient reaches the zero-started kernels."""
  f = tf.constant(np.random.default_rng(3).normal(size=(4, 6, 6, 32)).astype("float32"))
  cat = tf.constant([0, 1, 2, 1], tf.int64)
  module = ConvAttention(kind, num_categories=3, channel_prior=4, spatial_prior=3,
                         spatial_norm=spatial_norm, identity_start=True)
  for training in (False, True):
    np.testing.assert_array_equal(np.asarray(module((f, cat), training=training)), f.numpy())
  paper = ConvAttention(kind, num_categories=3, channel_prior=4, spatial_prior=3, spatial_norm=spatial_norm)
  assert np.abs(np.asarray(paper((f, cat))) - f.numpy()).mean() > 0.2 * np.abs(f.numpy()).mean()
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(module((f, cat), training=True) * tf.range(32, dtype=tf.float32))
  zero_started = [module.channel.fc2.kernel] + ([module.spatial_gate.conv.kernel] if module.spatial_gate else [])
  for var, g in zip(zero_started, tape.gradient(loss, zero_started)):
    assert np.abs(tf.convert_to_tensor(g).numpy()).sum() > 0, var.path


def test_config_and_argument_validation():
  with pytest.raises(ValueError, match="attention kind"):
    AttentionConfig("fancy")
  with pytest.raises(ValueError, match="num_categories"):
    ConvAttention("cscnn", num_categories=0)
  with pytest.raises(ValueError, match="pooling"):
    ChannelAttention(pooling=("median",))
  with pytest.raises(ValueError, match="odd"):
    SpatialAttention(kernel_size=4)
  with pytest.raises(ValueError, match="category_ids"):
    ChannelAttention(num_categories=2, prior_dim=2)(np.ones((1, 2, 2, 4), "float32"))
  for bad in (0, -1.0, True, "2"):
    with pytest.raises(ValueError, match="gate_scale"):
      SpatialAttention(gate_scale=bad)
  assert AttentionConfig("cscnn").category_prior and AttentionConfig("cscnn").spatial
  assert not AttentionConfig("cbam").category_prior
  assert AttentionConfig("se_prior").pooling == ("avg",)


@pytest.mark.parametrize("layer", [
    ChannelAttention(reduction=2, pooling=("avg",), num_categories=3, prior_dim=5),
    SpatialAttention(kernel_size=5, num_categories=3, prior_size=(3, 2)),
    SpatialAttention(normalize=True),
    ConvAttention("cscnn", num_categories=3, spatial_norm=True),
    ConvAttention("se_prior", num_categories=3, channel_prior=4, reduction=2, return_attention=True),
    ConvAttention("cscnn", num_categories=3, identity_start=True),
    ChannelAttention(gate_scale=2.0, output_initializer="zeros"),
])
def test_get_config_round_trip(layer):
  config = layer.get_config()
  clone = type(layer).from_config(config)
  assert clone.get_config() == config


@pytest.mark.parametrize("out_size, in_size", [(4, 2), (13, 7), (56, 6), (7, 7), (3, 7)])
def test_bilinear_matrix_matches_tf_image_resize(out_size, in_size):
  from models.attention import bilinear_matrix
  a = np.random.default_rng(out_size).normal(size=(2, in_size, in_size)).astype("float32")
  ref = tf.image.resize(a[..., None], (out_size, out_size), method="bilinear", antialias=False).numpy()[..., 0]
  m = bilinear_matrix(out_size, in_size)
  np.testing.assert_allclose(np.einsum("hi,bij,wj->bhw", m, a, m), ref, rtol=1e-5, atol=1e-5)


def test_spatial_prior_resize_matches_tf_image_resize_for_unequal_sides():
  # H != W and H' != W': a swapped Kronecker factor or flattening order would show here
  layer = SpatialAttention(num_categories=3, prior_size=(3, 5))
  layer.build([(None, 6, 4, 2), (None,)])
  priors = np.random.default_rng(0).normal(size=(3, 3, 5)).astype("float32")
  layer.prior.assign(priors)
  ids = np.array([2, 0, 2, 1])
  got = np.asarray(layer.resized_prior(ids, 6, 4))
  ref = tf.image.resize(priors[ids][..., None], (6, 4), method="bilinear", antialias=False).numpy()
  assert got.shape == (4, 6, 4, 1)
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
