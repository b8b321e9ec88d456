"""`cscnn bench training`: training-step cost of the visual CTR model on CPU.

One process, side by side: every configuration is built first, then timed in interleaved
rounds, backbone by backbone (one measurement of each of the backbone's configurations per
round, in a new seeded random order each round), so that machine drift and order effects hit
the configurations a ratio compares alike (on a shared 2-core VM the speed drifts by tens of
percent within minutes). A measurement is the mean step time over enough consecutive steps to
last about `min_measure_s` (`--measure-seconds`: one or two ResNet18 steps, about fifteen light
ones), so that fast configurations are not timed on single noisy steps. Step times are medians
over rounds; a ratio of two configurations is the median of their per-round ratios (paired by
round), with a bootstrap 90% interval of that median, so one run says whether a difference is
larger than its noise.

- attention (group ``attention``): none / CBAM / CSCNN on each backbone, de-duplication on, G impressions per ad;
  reports the step-time ratio CSCNN / CBAM.
- de-duplication (group ``dedup``): on / off at 1, 5 and 25 impressions per ad (paper 3.4.1).
- frozen backbone (group ``frozen``, not timed by default): the ``fixed`` variant trained on images against the same
  model trained on features computed once per ad (what the Trainer does for ``fixed`` and
  ``transfer``: `models.visual.split_frozen_tower`); reports that speed-up.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import sys
import time
from typing import Dict, List, Sequence, Tuple

import numpy as np


def _batch(n_impressions: int, per_ad: int, image_size: int, id_space: int, rng):
  from spec.features import DEFAULT_SPEC, transformed_name
  n_ads = max(1, n_impressions // per_ad)
  ad_of = np.repeat(np.arange(n_ads), per_ad)[:n_impressions]
  ad_of = np.concatenate([ad_of, np.arange(n_impressions - len(ad_of))])
  images = rng.uniform(0, 255, size=(n_ads, image_size, image_size, 3)).astype("float32")
  x = {transformed_name(f.name): rng.integers(0, id_space, size=(n_impressions,) + f.shape)
       for f in DEFAULT_SPEC.features}
  x["image"] = images[ad_of % n_ads]
  x["image_key"] = (ad_of % n_ads).astype("int64")
  x[transformed_name(DEFAULT_SPEC.category)] = (ad_of % 7).astype("int64")
  y = rng.integers(0, 2, size=(n_impressions, 1)).astype("float32")
  return x, y, len(np.unique(ad_of % n_ads))


ATTENTIONS = ("none", "cbam", "cscnn")   # none: the fine-tuned CNN without attention
GROUPS = ("attention", "dedup", "frozen")   # the configurations bench_training can time
GOAL_CSCNN_OVER_CBAM = 1.05   # issue 7: CSCNN's step time within 5% of CBAM's (paper: FLOPs +0.03%)


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float], resamples: int = 2000,
                 level: float = 0.90, seed: int = 0) -> Tuple[float, float, float]:
  """Median of the per-round ratios numerator[r] / denominator[r], and a bootstrap `level`
  interval of that median (resampling rounds with replacement, seeded)."""
  if len(numerator) != len(denominator) or not numerator:
    raise ValueError(f"paired_ratio needs two equal, non-empty series, got {len(numerator)} and {len(denominator)}")
  ratios = np.asarray(numerator, float) / np.asarray(denominator, float)
  rng = np.random.default_rng(seed)
  medians = np.median(rng.choice(ratios, size=(resamples, len(ratios)), replace=True), axis=1)
  tail = (1.0 - level) / 2 * 100
  lo, hi = np.percentile(medians, [tail, 100 - tail])
  return float(np.median(ratios)), float(lo), float(hi)


def goal_verdict(lo: float, hi: float, goal: float = GOAL_CSCNN_OVER_CBAM) -> str:
  """'met' when the whole interval is within the goal, 'missed' when it is all above, else
  'undecided' (the run cannot tell; more --rounds narrow the interval)."""
  return "met" if hi <= goal else "missed" if lo > goal else "undecided"


def machine() -> Dict[str, object]:
  """What the figures were measured on: CPU model, cores, TensorFlow and Keras versions."""
  import platform

  import keras
  import tensorflow as tf
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
  except OSError:
    pass
  return {"cpu": cpu, "cores": os.cpu_count(), "tensorflow": tf.__version__, "keras": keras.__version__}


def bench_training(backbones=("light", "resnet18"), attentions=ATTENTIONS,
                   per_ad=(1, 5, 25), batch: int = 100, image_size: int = 32, rounds: int = 10,
                   warmup: int = 2, attention_per_ad: int = 5, min_measure_s: float = 1.0,
                   groups: Sequence[str] = ("attention", "dedup"), log=print) -> Dict[str, object]:
  import keras
  from models.ctr import build_model
  from models.dcn import DCNConfig
  from models.pretrain import embed
  from models.visual import VISUAL_LAYER, VisualConfig, split_frozen_tower
  from spec import choices as C
  from spec.features import DEFAULT_SPEC

  unknown = [b for b in backbones if b not in C.BACKBONES] + [a for a in attentions if a not in ATTENTIONS]
  unknown += [g for g in groups if g not in GROUPS]
  if unknown or not groups:   # before minutes of building models, not after
    raise ValueError(f"unknown {', '.join(unknown) or 'empty groups'}: backbones are {', '.join(C.BACKBONES)}, "
                     f"attention kinds {', '.join(ATTENTIONS)}, groups {', '.join(GROUPS)}")
  if not min_measure_s > 0:
    raise ValueError(f"measure-seconds must be > 0, got {min_measure_s}")
  for name, value in (("batch", batch), ("rounds", rounds), ("warmup", warmup),
                      *((f"per-ad {g}", g) for g in per_ad)):
    if value < 1:
      raise ValueError(f"{name} must be >= 1, got {value}")
  rng = np.random.default_rng(0)
  id_space = 50
  sizes = {f.name: id_space for f in DEFAULT_SPEC.features}
  configs = []   # (key, backbone, attention, per_ad, dedup)
  for b in backbones:
    for a in attentions if "attention" in groups else ():
      configs.append((f"{b}/{a}/G{attention_per_ad}/dedup", b, a, attention_per_ad, True))
  for b in backbones:
    for g in per_ad if "dedup" in groups else ():
      for d in (True, False):
        key = f"{b}/cscnn/G{g}/{'dedup' if d else 'nodedup'}"
        if key not in {c[0] for c in configs}:
          configs.append((key, b, "cscnn", g, d))
    if "frozen" in groups:
      for how in ("images", "features"):
        configs.append((f"{b}/fixed/G{attention_per_ad}/{how}", b, "fixed", attention_per_ad, True))

  runs = {}
  for key, b, a, g, d in configs:
    keras.utils.set_random_seed(0)
    variant = {"none": "finetune"}.get(a, a)
    visual = VisualConfig(variant, b, image_size=image_size, dedup=d)
    model = build_model(DEFAULT_SPEC, sizes, DCNConfig(), visual)
    x, y, unique = _batch(batch, g, image_size, id_space, rng)
    if key.endswith("/features"):   # the Trainer's path: features once per ad, then the head alone
      features, head = split_frozen_tower(model.get_layer(VISUAL_LAYER).tower, visual)
      x = {**x, "image": embed(features, x["image"])}
      model = build_model(DEFAULT_SPEC, sizes, DCNConfig(), visual, visual_head=head)
    for _ in range(warmup):
      t0 = time.perf_counter()
      model.train_on_batch(x, y)
    steps = max(1, math.ceil(min_measure_s / (time.perf_counter() - t0)))   # from the last warm-up step
    runs[key] = (model, x, y, unique, steps)
    log(f"  built and warmed up {key} ({steps} step(s) per measurement)", file=sys.stderr)

  times: Dict[str, List[float]] = {k: [] for k in runs}
  order_rng = np.random.default_rng(1)
  t_start = time.time()
  for b in backbones:   # rounds per backbone: the configurations a ratio compares are timed seconds apart
    keys = [k for k in runs if k.split("/", 1)[0] == b]
    for r in range(rounds):
      for i in order_rng.permutation(len(keys)):
        model, x, y, _, steps = runs[keys[i]]
        t0 = time.perf_counter()
        for _ in range(steps):
          model.train_on_batch(x, y)
        times[keys[i]].append((time.perf_counter() - t0) / steps)
      log(f"  {b} round {r + 1}/{rounds} ({time.time() - t_start:.0f} s)", file=sys.stderr)

  results = {}
  for key, (_, _, _, unique, steps) in runs.items():
    med = statistics.median(times[key])
    results[key] = {"step_ms": round(med * 1000, 2), "impressions_per_s": round(batch / med, 1),
                    "unique_images_per_s": round(unique / med, 1), "unique_images": unique,
                    "steps_per_measurement": steps,
                    "round_ms": [round(t * 1000, 3) for t in times[key]]}
  out: Dict[str, object] = {"machine": machine(), "batch": batch, "image_size": image_size,
                            "rounds": rounds, "min_measure_s": min_measure_s,
                            "attention_per_ad": attention_per_ad, "results": results}

  def ratio(num, den):
    return paired_ratio(times[num], times[den]) if num in times and den in times else None

  for b in backbones:
    att = ratio(f"{b}/cscnn/G{attention_per_ad}/dedup", f"{b}/cbam/G{attention_per_ad}/dedup")
    if att:
      out[f"{b}_cscnn_over_cbam_step_ratio"] = round(att[0], 3)
      out[f"{b}_cscnn_over_cbam_step_ratio_ci90"] = [round(att[1], 3), round(att[2], 3)]
      out[f"{b}_cscnn_over_cbam_goal"] = goal_verdict(att[1], att[2])
    for g in per_ad:
      dedup = ratio(f"{b}/cscnn/G{g}/nodedup", f"{b}/cscnn/G{g}/dedup")
      if dedup:
        out[f"{b}_dedup_speedup_G{g}"] = round(dedup[0], 3)
        out[f"{b}_dedup_speedup_G{g}_ci90"] = [round(dedup[1], 3), round(dedup[2], 3)]
    cached = ratio(f"{b}/fixed/G{attention_per_ad}/images", f"{b}/fixed/G{attention_per_ad}/features")
    if cached:
      out[f"{b}_frozen_features_speedup"] = round(cached[0], 3)
      out[f"{b}_frozen_features_speedup_ci90"] = [round(cached[1], 3), round(cached[2], 3)]
  return out


def format_training(out: Dict[str, object]) -> str:
  m = out["machine"]
  width = max([32] + [len(k) for k in out["results"]])
  lines = [f"machine: {m['cpu']}, {m['cores']} cores, TensorFlow {m['tensorflow']}, Keras {m['keras']}",
           f"training step of DCN + visual tower, batch {out['batch']} impressions, "
           f"{out['image_size']}x{out['image_size']} images, median of {out['rounds']} interleaved rounds "
           f"(a round times each configuration over steps lasting about {out['min_measure_s']} s)",
           f"{'configuration':<{width}} {'step ms':>9} {'impr/s':>9} {'images/s':>9}"]
  for key, r in out["results"].items():
    lines.append(f"{key:<{width}} {r['step_ms']:>9.1f} {r['impressions_per_s']:>9.0f} "
                 f"{r['unique_images_per_s']:>9.0f}")
  lines.append(f"ratios: median of per-round paired ratios [bootstrap 90% interval of the median]; "
               f"goal CSCNN / CBAM <= {GOAL_CSCNN_OVER_CBAM}")
  for k, v in out.items():
    if k.endswith("_step_ratio") or (("_dedup_speedup_G" in k or "_frozen_features_speedup" in k)
                                     and not k.endswith("_ci90")):
      ci = out.get(f"{k}_ci90")
      goal = out.get(k.replace("_step_ratio", "_goal")) if k.endswith("_step_ratio") else None
      lines.append(f"{k}: {v}" + (f" [{ci[0]}, {ci[1]}]" if ci else "") + (f", goal {goal}" if goal else ""))
  return "\n".join(lines)


def _percentile(xs, q):
  return float(np.percentile(np.asarray(xs) * 1000, q))


def dense_reference(kernels: Sequence[Tuple[int, int]], rows: int):
  """The physical reference of a served model: a bare Keras Dense stack with the model's kernel
  shapes (bias and ReLU) on `rows` rows, so the same matmuls run one after the other and little
  else. Each layer's output, with constant columns appended where the next kernel has more
  inputs (x_v, the cross network's output), feeds the next. Returns a no-argument callable that
  runs the stack once and waits for the result."""
  import keras
  import tensorflow as tf
  rng = np.random.default_rng(0)
  layers = [keras.layers.Dense(o, activation="relu") for _, o in kernels]
  x = tf.constant(rng.normal(size=(rows, kernels[0][0])).astype("float32"))
  extra = [tf.constant(rng.normal(size=(rows, max(0, i - prev[1]))).astype("float32"))
           for prev, (i, _) in zip(kernels, kernels[1:])]

  @tf.function
  def run():
    h = layers[0](x)
    for layer, (i, _), more in zip(layers[1:], kernels[1:], extra):
      h = layer(tf.concat([h, more], axis=1)[:, :i])
    return h

  return lambda: run().numpy()


def bench_serving(base_path: str, model: str, candidates_csv: str, sizes=(1, 100, 1000),
                  requests: int = 200, repeats: int = 3, concurrency=(1, 4, 8),
                  throughput_requests: int = 100, port: int = 0, profile: int = 0,
                  log=print) -> Dict[str, object]:
  """gRPC latency against `cscnn serve` in a subprocess vs a direct in-process call of the same
  signature and vs the model's matmuls alone (`dense_reference`), interleaved request by
  request; medians over `repeats` runs; then items/s at several client concurrencies (requests
  of 100 candidates). `profile` > 0: also the cost of each stage of a request of that many
  candidates (`profile_serving`), measured after the server has stopped."""
  import csv
  import socket
  import subprocess
  import threading

  import grpc
  import tensorflow as tf
  from models.cost import served_macs_per_row
  from serving.client import CtrClient, candidate_tensors
  from serving.model_manager import numeric_versions
  from spec.names import SERVING_RAW

  with open(candidates_csv, newline="") as f:
    rows = [r for _, r in zip(range(max(sizes)), csv.DictReader(f))]
  while len(rows) < max(sizes):
    rows = rows + rows
  versions = numeric_versions(base_path)
  if not versions:
    raise FileNotFoundError(f"no numeric model version under {base_path}")
  loaded = tf.saved_model.load(os.path.join(base_path, str(versions[-1])))
  direct = loaded.signatures[SERVING_RAW]
  if not port:
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      port = s.getsockname()[1]
  server = subprocess.Popen([sys.executable, "-m", "cscnn", "serve", "--model-base-path", base_path,
                             "--model-name", model, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    client = CtrClient(f"127.0.0.1:{port}", timeout=30)
    deadline = time.time() + 120
    while True:
      try:
        client.status(model)
        break
      except grpc.RpcError:
        if time.time() > deadline or server.poll() is not None:
          raise RuntimeError("the model server did not come up")
        time.sleep(0.3)
    cost = served_macs_per_row(direct.variables)
    out: Dict[str, object] = {"model_version": versions[-1], "requests": requests, "repeats": repeats,
                              "machine": machine(), "macs_per_candidate": cost["macs"],
                              "dense_kernels": cost["dense_kernels"]}
    for n in sizes:
      cands = rows[:n]
      request = client.predict_request(model, cands)
      tensors = candidate_tensors(cands)
      reference = dense_reference(cost["dense_kernels"], n)
      for _ in range(5):                               # warm up every path
        client.predictions.Predict(request, timeout=30)
        direct(**tensors)
        reference()
      per_repeat = {k: [] for k in ("grpc_p50", "grpc_p99", "inprocess_p50", "inprocess_p99",
                                    "dense_p50", "dense_p99")}
      for r in range(repeats):
        g, d, m = [], [], []
        for _ in range(requests):
          t0 = time.perf_counter()
          client.predictions.Predict(request, timeout=30)
          t1 = time.perf_counter()
          direct(**tensors)["ctr"].numpy()
          t2 = time.perf_counter()
          reference()
          t3 = time.perf_counter()
          g.append(t1 - t0)
          d.append(t2 - t1)
          m.append(t3 - t2)
        for k, xs in (("grpc", g), ("inprocess", d), ("dense", m)):
          per_repeat[f"{k}_p50"].append(_percentile(xs, 50))
          per_repeat[f"{k}_p99"].append(_percentile(xs, 99))
      for k, v in per_repeat.items():
        out[f"{k}_ms_{n}"] = round(statistics.median(v), 3)
      out[f"ratio_p50_{n}"] = round(out[f"grpc_p50_ms_{n}"] / out[f"inprocess_p50_ms_{n}"], 3)
      out[f"ratio_p99_{n}"] = round(out[f"grpc_p99_ms_{n}"] / out[f"inprocess_p99_ms_{n}"], 3)
      log(f"  {n} candidates: gRPC p50 {out[f'grpc_p50_ms_{n}']} ms p99 {out[f'grpc_p99_ms_{n}']} ms", file=sys.stderr)
    request = client.predict_request(model, rows[:100])
    for c in concurrency:
      def worker():
        for _ in range(throughput_requests):
          client.predictions.Predict(request, timeout=30)
      threads = [threading.Thread(target=worker) for _ in range(c)]
      t0 = time.perf_counter()
      for t in threads:
        t.start()
      for t in threads:
        t.join()
      out[f"items_per_s_c{c}"] = round(c * throughput_requests * 100 / (time.perf_counter() - t0), 1)
  finally:
    server.terminate()
    server.wait(timeout=30)
  if profile:
    out["profile"] = profile_serving(base_path, model, rows[:profile], requests=requests, log=log)
    grpc_p50 = out.get(f"grpc_p50_ms_{profile}")
    if grpc_p50 is not None:
      out["profile"]["grpc_rest_ms"] = round(grpc_p50 - out["profile"]["stages"]["handler"]["p50_ms"], 3)
  return out


# Stages of the serving graph, by the name scope of an op (the first that matches).
GRAPH_STAGES = (("ParseExample", "tf.Example parsing"),
                ("transform_features_layer", "Transform layer (vocabularies, hashing, splitting)"),
                ("/visual_table", "visual-table lookup"),     # the layer, not the model dcn_with_visual_table
                ("/emb_", "DCN: embeddings"),
                ("cross_net", "DCN: cross network"),
                ("dcn", "DCN: deep and output layers"),
                ("", "other ops (reshapes, casts)"))
_OP_EVENT = re.compile(r"^[\w./-]+:(\w+)$")      # "scope/name:OpType", as the TF profiler names ops


def traced_ops(fn, kwargs, calls: int) -> List[Tuple[str, str, float]]:
  """(event name, op type, milliseconds per call) of every op kernel that ran in a TF profiler
  trace of `calls` calls of `fn(**kwargs)`, over all executor threads; the function-call ops
  (StatefulPartitionedCall, PartitionedCall) are left out, their ops are counted themselves."""
  import glob
  import tempfile

  import tensorflow as tf
  from tensorflow.tsl.profiler.protobuf import xplane_pb2

  with tempfile.TemporaryDirectory() as logdir:
    tf.profiler.experimental.start(logdir)
    try:
      for _ in range(calls):
        [v.numpy() for v in fn(**kwargs).values()]
    finally:
      tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    with open(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0], "rb") as f:
      space.ParseFromString(f.read())
  ops = []
  for plane in space.planes:
    for line in plane.lines:
      for event in line.events:
        name = plane.event_metadata[event.metadata_id].name
        op = _OP_EVENT.match(name)
        if op and op.group(1) not in ("StatefulPartitionedCall", "PartitionedCall"):
          ops.append((name, op.group(1), event.duration_ps / 1e9 / calls))
  return ops


def graph_op_times(fn, kwargs, calls: int = 50) -> Dict[str, float]:
  """Milliseconds of op time per call of `fn(**kwargs)` by graph stage (GRAPH_STAGES), from a TF
  profiler trace of `calls` calls: the time each op's kernel ran, summed over both executor
  threads (ops of one call may overlap, so the sum can exceed the call's wall time)."""
  totals = {label: 0.0 for _, label in GRAPH_STAGES}
  for name, _, ms in traced_ops(fn, kwargs, calls):
    totals[next(label for key, label in GRAPH_STAGES if key in name)] += ms
  return totals


def profile_serving(base_path: str, model: str, candidates, requests: int = 200, trace_calls: int = 50,
                    log=print) -> Dict[str, object]:
  """Where the time of one Predict request of len(candidates) candidates goes, in process on the
  latest version under `base_path`, with the server's own code and its `serving_raw` request:

  - server stages, each timed alone `requests` times, interleaved (p50 and p99): the gRPC message
    decode (protobuf parse), the tensor decoding, the validation, the graph call (arrays to
    tensors, the signature, outputs to numpy; and the signature alone on ready tensors), the
    output encoding; and the whole handler (`PredictionService.Predict` without gRPC);
  - inside the graph, op time per stage (`graph_op_times`) for ``serving_raw`` and for
    ``serving_default`` on the same candidates as tf.Examples.
  """
  import tensorflow as tf
  from tensorflow_serving.apis import predict_pb2

  from serving.client import candidate_example, predict_request
  from serving.model_manager import ModelConfig, ModelManager
  from serving.server import PredictionService, RequestLimits, decode_inputs, predict_response
  from spec.names import SERVING_RAW

  manager = ModelManager([ModelConfig(model, base_path)])
  manager.poll_once(initial=True)
  servable = manager.get(model)
  service, limits = PredictionService(manager), RequestLimits()
  request = predict_request(model, candidates, SERVING_RAW)
  wire = request.SerializeToString()
  inputs = decode_inputs(request.inputs, limits)
  arrays = servable.validate(SERVING_RAW, inputs)
  outputs = servable._call(SERVING_RAW, arrays)  # pylint: disable=protected-access
  signature, tensors = servable.signatures[SERVING_RAW], {k: tf.constant(v) for k, v in arrays.items()}
  stages = {
      "grpc_decode": lambda: predict_pb2.PredictRequest.FromString(wire),
      "tensor_decoding": lambda: decode_inputs(request.inputs, limits),
      "validation": lambda: servable.validate(SERVING_RAW, inputs),
      "graph_call": lambda: servable._call(SERVING_RAW, arrays),  # pylint: disable=protected-access
      "signature": lambda: [v.numpy() for v in signature(**tensors).values()],
      "output_encoding": lambda: predict_response(servable, request, outputs).SerializeToString(),
      "handler": lambda: service.Predict(predict_pb2.PredictRequest.FromString(wire), None).SerializeToString(),
  }
  for fn in stages.values():
    for _ in range(5):
      fn()
  times = {k: [] for k in stages}
  for _ in range(requests):
    for k, fn in stages.items():
      t0 = time.perf_counter()
      fn()
      times[k].append(time.perf_counter() - t0)
  out: Dict[str, object] = {
      "candidates": len(candidates), "requests": requests, "trace_calls": trace_calls,
      "stages": {k: {"p50_ms": round(_percentile(v, 50), 3), "p99_ms": round(_percentile(v, 99), 3)}
                 for k, v in times.items()}}
  log(f"  profile: server stages timed ({requests} requests of {len(candidates)} candidates)", file=sys.stderr)
  examples = np.array([candidate_example(c).SerializeToString() for c in candidates], dtype=object)
  for name, kwargs in ((SERVING_RAW, tensors), ("serving_default", {"examples": tf.constant(examples)})):
    fn = servable.signatures[name]
    for _ in range(5):
      fn(**kwargs)
    out[f"graph_{name}"] = graph_op_times(fn, kwargs, trace_calls)
  manager.stop()
  return out


SERVER_STAGES = (("grpc_decode", "gRPC message decode (PredictRequest parse)"),
                 ("tensor_decoding", "tensor decoding (TensorProto -> numpy)"),
                 ("validation", "validation (names, dtypes, shapes)"),
                 ("graph_call", "graph call (to tensors, the signature, to numpy)"),
                 ("signature", "  of which the signature alone (tensors ready)"),
                 ("output_encoding", "output encoding (PredictResponse, serialized)"),
                 ("handler", "whole handler (PredictionService.Predict, no gRPC)"))


def format_profile(p: Dict[str, object]) -> str:
  lines = [f"stages of one request of {p['candidates']} candidates, in process ({p['requests']} "
           f"requests, each stage timed alone, interleaved):",
           f"  {'stage':<52} {'p50 ms':>8} {'p99 ms':>8}"]
  for key, label in SERVER_STAGES:
    st = p["stages"][key]
    lines.append(f"  {label:<52} {st['p50_ms']:>8.3f} {st['p99_ms']:>8.3f}")
  if "grpc_rest_ms" in p:
    lines.append(f"  {'gRPC transport and frameworks (gRPC p50 - handler p50)':<52} {p['grpc_rest_ms']:>8.3f}")
  sigs = [k for k in p if k.startswith("graph_")]
  lines.append(f"inside the graph: op time per request (TF profiler, {p['trace_calls']} calls; both "
               f"executor threads summed)")
  lines.append(f"  {'stage':<52} " + " ".join(f"{k[len('graph_'):]:>15}" for k in sigs))
  for _, label in GRAPH_STAGES:
    lines.append(f"  {label:<52} " + " ".join(f"{p[k][label]:>15.3f}" for k in sigs))
  lines.append(f"  {'sum of op time':<52} " + " ".join(f"{sum(p[k].values()):>15.3f}" for k in sigs))
  return "\n".join(lines)


def format_serving(out: Dict[str, object], sizes=(1, 100, 1000)) -> str:
  m = out["machine"]
  lines = [f"machine: {m['cpu']}, {m['cores']} cores, TensorFlow {m['tensorflow']}",
           f"model version {out['model_version']}: {out['requests']} requests per size, median of "
           f"{out['repeats']} runs, gRPC, in-process and dense-stack calls interleaved",
           f"physical reference: {out['macs_per_candidate']:,} multiply-adds per candidate "
           f"(dense kernels {', '.join(f'{i}x{o}' for i, o in out['dense_kernels'])}); 'dense' is a bare "
           f"Keras Dense stack of these shapes on the same batch",
           f"{'candidates':>10} {'gRPC p50':>9} {'gRPC p99':>9} {'direct p50':>10} {'direct p99':>10} "
           f"{'dense p50':>9} {'dense p99':>9} {'p50 ratio':>9} {'p99 ratio':>9} {'GMAC/s':>7}"]
  for n in sizes:
    if f"grpc_p50_ms_{n}" in out:
      gmacs = out["macs_per_candidate"] * n / (out[f"dense_p50_ms_{n}"] / 1000) / 1e9
      lines.append(f"{n:>10} {out[f'grpc_p50_ms_{n}']:>9.2f} {out[f'grpc_p99_ms_{n}']:>9.2f} "
                   f"{out[f'inprocess_p50_ms_{n}']:>10.2f} {out[f'inprocess_p99_ms_{n}']:>10.2f} "
                   f"{out[f'dense_p50_ms_{n}']:>9.2f} {out[f'dense_p99_ms_{n}']:>9.2f} "
                   f"{out[f'ratio_p50_{n}']:>9.2f} {out[f'ratio_p99_{n}']:>9.2f} {gmacs:>7.1f}")
  for k, v in out.items():
    if k.startswith("items_per_s_c"):
      lines.append(f"throughput at concurrency {k[len('items_per_s_c'):]}: {v:,.0f} items/s "
                   "(100 candidates per request)")
  if "profile" in out:
    lines.append(format_profile(out["profile"]))
  return "\n".join(lines)
