"""The served DCN's dense arithmetic alone, by three matmul libraries side by side: TensorFlow
(a tf.function, Eigen kernels), TensorFlow with XLA (`jit_compile=True`) and numpy (OpenBLAS).
How close the serving graph can come to the machine's limit depends on which library runs the
matmuls; this prints it.

  bin/env python scripts/bench_dense_kernels.py [--rows 100] [--calls 300] [--intra-op-threads N]
  OPENBLAS_NUM_THREADS=1 bin/env python scripts/bench_dense_kernels.py --intra-op-threads 1   # one core each

The default shapes are the `make demo` model's (`bench serving` prints them): the deep tower
44x1024, then [h, x_v] 1174x512, 512x256, the output layer on [h, cross] 300x128 and 128x1, ReLU
between. Calls of the three are interleaved; p50 and p99 in ms and multiply-adds per second.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

DEMO_KERNELS = ((44, 1024), (1174, 512), (512, 256), (300, 128), (128, 1))


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--rows", type=int, default=100, help="candidates per call")
  ap.add_argument("--calls", type=int, default=300, help="timed calls of each library")
  ap.add_argument("--intra-op-threads", type=int, default=0, help="TensorFlow's intra-op threads (0: its default)")
  args = ap.parse_args()

  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  if args.intra_op_threads:
    tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
  rng = np.random.default_rng(0)
  kernels = [rng.standard_normal(s).astype(np.float32) * 0.05 for s in DEMO_KERNELS]
  width_in = [DEMO_KERNELS[0][0], DEMO_KERNELS[1][0] - DEMO_KERNELS[0][1], DEMO_KERNELS[3][0] - DEMO_KERNELS[2][1]]
  x0, xv, cross = (rng.standard_normal((args.rows, w)).astype(np.float32) for w in width_in)
  macs = args.rows * sum(a * b for a, b in DEMO_KERNELS)

  def np_chain(x0, xv, cross):
    h = np.maximum(x0 @ kernels[0], 0)
    h = np.maximum(np.concatenate([h, xv], 1) @ kernels[1], 0)
    h = np.maximum(h @ kernels[2], 0)
    h = np.maximum(np.concatenate([h, cross], 1) @ kernels[3], 0)
    return h @ kernels[4]

  tf_kernels = [tf.constant(k) for k in kernels]

  def tf_chain(x0, xv, cross):
    h = tf.nn.relu(x0 @ tf_kernels[0])
    h = tf.nn.relu(tf.concat([h, xv], 1) @ tf_kernels[1])
    h = tf.nn.relu(h @ tf_kernels[2])
    h = tf.nn.relu(tf.concat([h, cross], 1) @ tf_kernels[3])
    return h @ tf_kernels[4]

  graph, xla = tf.function(tf_chain), tf.function(tf_chain, jit_compile=True)
  tensors = [tf.constant(a) for a in (x0, xv, cross)]
  calls = {"numpy (OpenBLAS)": lambda: np_chain(x0, xv, cross),
           "TensorFlow": lambda: graph(*tensors).numpy(),
           "TensorFlow XLA": lambda: xla(*tensors).numpy()}
  reference = np_chain(x0, xv, cross)
  for name, call in calls.items():
    np.testing.assert_allclose(call(), reference, rtol=1e-3, atol=1e-4, err_msg=name)
    for _ in range(20):
      call()
  times = {name: [] for name in calls}
  for _ in range(args.calls):
    for name, call in calls.items():
      t = time.perf_counter()
      call()
      times[name].append((time.perf_counter() - t) * 1e3)
  print(f"{args.rows} rows, {macs:,} multiply-adds per call, {args.calls} calls each, interleaved; "
        f"TensorFlow intra-op threads: {args.intra_op_threads or 'default'}")
  print(f"{'library':<18} {'p50 ms':>8} {'p99 ms':>8} {'GMAC/s at p50':>14}")
  for name, ts in times.items():
    p50, p99 = np.percentile(ts, 50), np.percentile(ts, 99)
    print(f"{name:<18} {p50:8.3f} {p99:8.3f} {macs / p50 / 1e6:14.1f}")


if __name__ == "__main__":
  main()
