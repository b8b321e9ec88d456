"""Why serving/batching.py is not `tf.nondifferentiable_batch_function`: two model versions in one
process, each wrapped in its own batch function, answer each other's requests.

  bin/env python scripts/batch_function_versions.py

Version 2 multiplies by 2, version 3 by 3; four client threads per version call their version's
batched function concurrently. The decorator names every batch resource "batch/" (the op's
``shared_name``), so both functions share one queue, and a merged batch runs with the function
of whichever version created the resource. Prints how many answers came from the other version.
"""

import os
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # pylint: disable=wrong-import-position


class Version(tf.Module):
  def __init__(self, w):
    super().__init__()
    self.w = tf.Variable(float(w))

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
  def serve(self, x):
    return x * self.w


def batched(version):
  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
  @tf.nondifferentiable_batch_function(num_batch_threads=1, max_batch_size=64, batch_timeout_micros=20000)
  def fn(x):
    return version.serve(x)
  return fn


def main():
  fns = {2: batched(Version(2)), 3: batched(Version(3))}
  wrong, total, lock = [], [0], threading.Lock()

  def client(v):
    for _ in range(10):
      out = float(fns[v](tf.constant([1.0])).numpy()[0])
      with lock:
        total[0] += 1
        if out != v:
          wrong.append((v, out))

  threads = [threading.Thread(target=client, args=(v,)) for v in (2, 3) for _ in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=120)
  print(f"{len(wrong)} of {total[0]} answers came from the other version"
        + (f", e.g. version {wrong[0][0]} answered {wrong[0][1]}" if wrong else ""))


if __name__ == "__main__":
  main()
