"""Fault and load report of the model server and the pipeline, on loopback only and bounded in time.

Run in the environment (as root for the full-disk part, which mounts a small tmpfs in the
environment's own mount namespace):

  bin/env python scripts/reliability_report.py --minutes 3 [--json]

Parts, in this order:
1. pipeline killed: `cscnn pipeline run --cache` on the tiny sample, SIGKILL while the Trainer
   runs, `pipeline summary` of the killed run, then the same command again: which components
   ran again, which were reused, how many versions were pushed.
2. full disk: the output of part 1 copied onto a tmpfs with about 2 MB free and the pipeline run
   again (a new Trainer budget, so training and everything after it run): the exit code, the
   error, and whether the serving folder kept its exact files.
3. sustained load: `cscnn serve --enable-batching` on the model of part 1, client threads sending
   10-candidate Predict requests for `--minutes`, a new version (other weights, so other scores)
   copied into the model folder every `--swap-every` seconds. Counted: requests, errors by
   status code, answers whose scores are not those of the version they name, a client seeing an
   older version after a newer one, p50/p99 latency, the server's RSS at start and end.
4. corrupt version: under the same load, a version with truncated variables is written; it must
   be skipped (logged) while the previous version goes on serving, and a good version after it
   must load.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODEL = "cscnn_ctr"
TINY = ["--impressions", "2000", "--ads", "60", "--categories", "4", "--users", "100", "--seed", "1"]
# A 20-step model on 2,000 rows is not meant to beat the heuristic baselines: the baseline gate is
# off (--baseline-margin=-1) so that a finished run pushes and the faults are what is measured.
RUN = ["--variant", "none", "--train-steps", "20", "--eval-steps", "3", "--epochs", "2",
       "--auc-floor", "0.0", "--baseline-margin=-1", "--cache"]


def log(*a):
  print(*a, file=sys.stderr, flush=True)


def cscnn(*args, timeout=900, **kw) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "cscnn", *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=timeout, **kw)


def summary(out: str) -> Dict:
  proc = cscnn("pipeline", "summary", "--output", out, "--json", timeout=300)
  return json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr[-500:]}


def folder_state(path: str) -> Dict[str, int]:
  """Every file under `path` with its size and modification time."""
  out = {}
  for d, _, files in os.walk(path):
    for f in files:
      st = os.stat(os.path.join(d, f))
      out[os.path.relpath(os.path.join(d, f), path)] = (st.st_size, st.st_mtime_ns)
  return out


# -- 1. pipeline killed during the Trainer ---------------------------------------------------
def pipeline_killed(work: str) -> Dict:
  data, out = os.path.join(work, "data"), os.path.join(work, "out")
  proc = cscnn("data", "sample", "--out", data, *TINY)
  assert proc.returncode == 0, proc.stderr
  log("part 1: pipeline run, SIGKILL once the Trainer has run for 5 s")
  t0 = time.time()
  first = subprocess.Popen([sys.executable, "-m", "cscnn", "pipeline", "run", "--data", data, "--output", out, *RUN],
                           cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
  trainer = os.path.join(out, "pipeline", "Trainer")
  while not os.path.isdir(trainer) and first.poll() is None and time.time() - t0 < 600:
    time.sleep(0.2)
  started = time.time()
  time.sleep(5)
  killed_while_running = first.poll() is None
  os.killpg(first.pid, signal.SIGKILL)
  first.wait(timeout=60)
  killed = summary(out)
  serving = os.path.join(out, "serving", MODEL)
  pushed_after_kill = sorted(os.listdir(serving)) if os.path.isdir(serving) else []
  log("part 1: rerun with --cache")
  t1 = time.time()
  again = cscnn("pipeline", "run", "--data", data, "--output", out, *RUN)
  rerun_s = time.time() - t1
  s = summary(out)
  states = s.get("components", {})
  return {
      "killed_after_s": round(started - t0 + 5, 1), "killed_while_trainer_ran": killed_while_running,
      "killed_run_finished": killed.get("run_finished"), "killed_run_unfinished": killed.get("unfinished"),
      "pushed_after_kill": pushed_after_kill,
      "rerun_exit": again.returncode, "rerun_s": round(rerun_s, 1),
      "rerun_cached": sorted(c for c, st in states.items() if st == "CACHED"),
      "rerun_ran": sorted(c for c, st in states.items() if st == "COMPLETE"),
      "rerun_blessed": s.get("blessed"),
      "pushed_versions": sorted(os.listdir(serving)) if os.path.isdir(serving) else [],
      "data": data, "out": out,
  }


# -- 2. full output disk -------------------------------------------------------------------------
def _used_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def full_disk(work: str, data: str, out: str, free_mb: int = 2) -> Dict:
  mnt = os.path.join(work, "small_disk")
  os.makedirs(mnt, exist_ok=True)
  size_mb = _used_bytes(out) // (1 << 20) + free_mb + 1
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", mnt],
                           capture_output=True, text=True)
  if mounted.returncode != 0:
    return {"skipped": f"cannot mount a tmpfs: {mounted.stderr.strip()}"}
  try:
    small_out = os.path.join(mnt, "out")
    shutil.copytree(out, small_out)
    st = os.statvfs(mnt)
    free_before = st.f_bavail * st.f_frsize
    serving = os.path.join(small_out, "serving", MODEL)
    before = folder_state(serving)
    log(f"part 2: pipeline run on a {size_mb} MB tmpfs with {free_before / (1 << 20):.1f} MB free")
    args = [a if a != "20" else "21" for a in RUN]              # a new Trainer budget: train again
    proc = cscnn("pipeline", "run", "--data", data, "--output", small_out, *args)
    lines = ([line for line in proc.stderr.splitlines() if "pipeline failed" in line]
             or proc.stderr.strip().splitlines()[-1:])
    error = lines[-1] if lines and proc.returncode else ""
    if len(error) > 200:                    # the error's start and its end (the cause, the file)
      error = error[:90] + " ... " + error[-110:]
    return {"tmpfs_mb": size_mb, "free_mb_before": round(free_before / (1 << 20), 1),
            "exit": proc.returncode, "error": error, "no_space_error": "No space left on device" in proc.stderr,
            "serving_unchanged": folder_state(serving) == before,
            "serving_versions": sorted(os.listdir(serving)) if os.path.isdir(serving) else []}
  finally:
    subprocess.run(["umount", "-l", mnt], capture_output=True)


# -- 3. and 4. sustained load with swaps, corrupt version ------------------------------------------
def shifted_version(src: str, dst: str, delta: float) -> None:
  """A copy of the SavedModel `src` at `dst` with its output bias moved by `delta`."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  shutil.copytree(src, dst)
  reader = tf.train.load_checkpoint(os.path.join(src, "variables", "variables"))
  shapes = reader.get_variable_to_shape_map()
  names, tensors = sorted(shapes), []
  for k in names:
    value = reader.get_tensor(k)
    if "/bias/" in k and "optimizer" not in k and shapes[k] == [1]:
      value = value + delta
    tensors.append(tf.constant(value))
  tf.raw_ops.SaveV2(prefix=os.path.join(dst, "variables", "variables"), tensor_names=names,
                    shape_and_slices=[""] * len(names), tensors=tensors)


def _rss_mb(pid: int) -> float:
  with open(f"/proc/{pid}/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  return float("nan")


def load_with_swaps(work: str, pushed: str, candidates_csv: str, minutes: float, swap_every: float,
                    threads: int) -> Dict:
  import grpc  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # pylint: disable=import-outside-toplevel
  from serving.client import candidate_tensors  # pylint: disable=import-outside-toplevel

  with open(candidates_csv) as f:
    pool = list(csv.DictReader(f))[:200]
  for r in pool:
    r.pop("label", None)
  variants, scores = {}, {}
  for i in range(3):                                  # version v has the weights of variant (v - 1) % 3
    variants[i] = os.path.join(work, "variants", str(i))
    shutil.rmtree(variants[i], ignore_errors=True)
    shifted_version(pushed, variants[i], 0.6 * i)
    m = tf.saved_model.load(variants[i])
    scores[i] = m.signatures["serving_raw"](**candidate_tensors(pool))["ctr"].numpy().ravel()
  base = os.path.join(work, "models", MODEL)
  shutil.rmtree(os.path.dirname(base), ignore_errors=True)
  os.makedirs(base)
  shutil.copytree(variants[0], os.path.join(base, "1"))
  server_log = open(os.path.join(work, "server.log"), "w")
  server = subprocess.Popen([sys.executable, "-m", "cscnn", "serve", "--model-base-path", base, "--model-name", MODEL,
                             "--port", "0", "--enable-batching", "--file-system-poll-wait-seconds", "1"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=server_log, text=True)
  try:
    line = server.stdout.readline()
    target = line.split("gRPC ")[1].split(",")[0].strip()
    channel = grpc.insecure_channel(target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    requests = {}
    for lo in range(0, len(pool) - 10, 5):
      req = predict_pb2.PredictRequest()
      req.model_spec.name, req.model_spec.signature_name = MODEL, "serving_raw"
      for k, t in candidate_tensors(pool[lo:lo + 10]).items():
        req.inputs[k].CopyFrom(tf.make_tensor_proto(t))
      requests[lo] = req
    stub.Predict(requests[0], timeout=60)              # the first version is loaded
    rss_start = _rss_mb(server.pid)
    stats = {"requests": 0, "ok": 0, "errors": {}, "wrong_scores": 0, "went_back": 0, "hung": 0}
    latencies: List[float] = []
    seen = set()
    lock, stop = threading.Lock(), threading.Event()
    deadline = time.time() + minutes * 60 + 30

    def client(seed):
      rnd, last = random.Random(seed), 0
      while not stop.is_set() and time.time() < deadline:
        lo = rnd.choice(list(requests))
        t0 = time.perf_counter()
        try:
          r = stub.Predict(requests[lo], timeout=10)
        except grpc.RpcError as e:
          with lock:
            stats["requests"] += 1
            stats["errors"][e.code().name] = stats["errors"].get(e.code().name, 0) + 1
          continue
        ms = (time.perf_counter() - t0) * 1000
        v = r.model_spec.version.value
        got = tf.make_ndarray(r.outputs["ctr"]).ravel()
        with lock:
          stats["requests"] += 1
          stats["ok"] += 1
          latencies.append(ms)
          seen.add(v)
          if not np.allclose(got, scores[(v - 1) % 3][lo:lo + 10], atol=1e-5):
            stats["wrong_scores"] += 1
          if v < last:
            stats["went_back"] += 1
        last = v

    workers = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(threads)]
    for w in workers:
      w.start()
    t_start, version, swaps = time.time(), 1, 0
    log(f"part 3: {threads} client threads for {minutes} min, a new version every {swap_every:g} s")
    while time.time() - t_start + swap_every <= minutes * 60:
      time.sleep(swap_every)
      version += 1
      shutil.copytree(variants[(version - 1) % 3], os.path.join(base, str(version)))
      swaps += 1
    time.sleep(max(0.0, minutes * 60 - (time.time() - t_start)))
    # 4. a corrupt version (truncated variables), then a good one, under the same load
    log("part 4: a version with truncated variables, then a good one")
    corrupt = version + 1
    dst = os.path.join(base, str(corrupt))
    shutil.copytree(variants[(corrupt - 1) % 3], dst)
    data = [f for f in os.listdir(os.path.join(dst, "variables")) if f.startswith("variables.data")][0]
    with open(os.path.join(dst, "variables", data), "r+b") as f:
      f.truncate(os.path.getsize(os.path.join(dst, "variables", data)) // 2)
    time.sleep(6)
    served_during_corrupt = max(seen)
    good = corrupt + 1
    shutil.copytree(variants[(good - 1) % 3], os.path.join(base, str(good)))
    t_good = time.time()
    while good not in seen and time.time() - t_good < 60:
      time.sleep(0.2)
    stop.set()
    for w in workers:
      w.join(timeout=30)
    stats["hung"] = sum(w.is_alive() for w in workers)
    rss_end = _rss_mb(server.pid)
    elapsed = time.time() - t_start
  finally:
    server.send_signal(signal.SIGTERM)
    try:
      server.wait(timeout=60)
    except subprocess.TimeoutExpired:
      server.kill()
    server_log.close()
  with open(os.path.join(work, "server.log")) as f:
    server_lines = f.read().splitlines()
  failed = [line for line in server_lines if f"failed to load {MODEL} version {corrupt}" in line]
  lat = np.array(latencies) if latencies else np.array([float("nan")])
  return {
      "minutes": round(elapsed / 60, 2), "client_threads": threads, "swaps": swaps,
      "versions_served": sorted(seen), "requests": stats["requests"], "ok": stats["ok"],
      "errors_by_code": stats["errors"], "wrong_scores": stats["wrong_scores"],
      "went_back": stats["went_back"], "hung_clients": stats["hung"],
      "p50_ms": round(float(np.percentile(lat, 50)), 2), "p99_ms": round(float(np.percentile(lat, 99)), 2),
      "rss_start_mb": round(rss_start, 1), "rss_end_mb": round(rss_end, 1),
      "corrupt_version": corrupt, "corrupt_skipped_and_logged": bool(failed) and corrupt not in seen,
      "served_while_corrupt": served_during_corrupt, "good_version_after_corrupt_served": good in seen,
      "tracebacks_in_server_log": sum(line.startswith("Traceback") for line in server_lines),
  }


def format_report(r: Dict) -> str:
  lines = ["| part | figure |", "|---|---|"]
  k = r.get("killed")
  if k:
    lines += [
        f"| pipeline SIGKILL | killed {k['killed_after_s']} s after start, "
        f"Trainer running: {k['killed_while_trainer_ran']}; "
        f"summary of the killed run: finished {k['killed_run_finished']}, unfinished {k['killed_run_unfinished']}; "
        f"pushed before rerun: {len(k['pushed_after_kill'])} |",
        f"| rerun with `--cache` | exit {k['rerun_exit']} in {k['rerun_s']} s; "
        f"reused (CACHED): {', '.join(k['rerun_cached'])}; "
        f"ran: {', '.join(k['rerun_ran'])}; blessed {k['rerun_blessed']}; "
        f"versions pushed: {len(k['pushed_versions'])} |"]
  d = r.get("full_disk")
  if d:
    if "skipped" in d:
      lines.append(f"| full disk | skipped: {d['skipped']} |")
    else:
      lines.append(f"| full disk ({d['tmpfs_mb']} MB tmpfs, {d['free_mb_before']} MB free) | exit {d['exit']}, "
                   f"'No space left on device' in the error: {d['no_space_error']}: `{d['error']}`; "
                   f"serving folder unchanged: {d['serving_unchanged']} ({len(d['serving_versions'])} version) |")
  load = r.get("load")
  if load:
    errors = ", ".join(f"{c} {n}" for c, n in sorted(load["errors_by_code"].items())) or "none"
    lines += [
        f"| sustained load | {load['minutes']} min, {load['client_threads']} client threads, batching on, "
        f"{load['swaps']} swaps "
        f"(versions served {load['versions_served'][0]}..{load['versions_served'][-1]}) |",
        f"| requests | {load['requests']} ({load['ok']} ok); errors by code: {errors}; "
        f"wrong scores {load['wrong_scores']}; "
        f"version went back {load['went_back']}; hung {load['hung_clients']}; tracebacks in the server log "
        f"{load['tracebacks_in_server_log']} |",
        f"| latency (10 candidates) | p50 {load['p50_ms']} ms, p99 {load['p99_ms']} ms |",
        f"| server RSS | {load['rss_start_mb']} MB at start, {load['rss_end_mb']} MB at end |",
        f"| corrupt version {load['corrupt_version']} (truncated variables) | skipped and logged: "
        f"{load['corrupt_skipped_and_logged']}; version {load['served_while_corrupt']} served meanwhile; "
        f"the next good version served: {load['good_version_after_corrupt_served']} |"]
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--minutes", type=float, default=3.0, help="sustained load duration")
  p.add_argument("--swap-every", type=float, default=20.0, help="seconds between new versions")
  p.add_argument("--threads", type=int, default=4, help="client threads")
  p.add_argument("--workdir", default=None, help="scratch folder under /tmp (default: a new one)")
  p.add_argument("--skip-pipeline", action="store_true", help="only parts 3 and 4, on --model-dir")
  p.add_argument("--model-dir", help="a pushed SavedModel for parts 3 and 4 (default: part 1's)")
  p.add_argument("--candidates", help="impressions CSV for the requests (default: part 1's sample)")
  p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
  args = p.parse_args(argv)
  work = args.workdir or tempfile.mkdtemp(prefix="cscnn-reliability-", dir="/tmp")
  os.makedirs(work, exist_ok=True)
  report: Dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count()}
  t0 = time.time()
  model_dir, candidates = args.model_dir, args.candidates
  if not args.skip_pipeline:
    report["killed"] = pipeline_killed(work)
    report["full_disk"] = full_disk(work, report["killed"]["data"], report["killed"]["out"])
    serving = os.path.join(report["killed"]["out"], "serving", MODEL)
    model_dir = model_dir or os.path.join(serving, sorted(os.listdir(serving))[-1])
    candidates = candidates or os.path.join(report["killed"]["data"], "impressions", "impressions.csv")
  if not model_dir or not candidates:
    p.error("--skip-pipeline needs --model-dir and --candidates")
  report["load"] = load_with_swaps(work, model_dir, candidates, args.minutes, args.swap_every, args.threads)
  report["total_minutes"] = round((time.time() - t0) / 60, 1)
  print(json.dumps(report, indent=1) if args.json else format_report(report) +
        f"\n\n{report['date']}, {report['cpus']} CPUs, {report['total_minutes']} min in all; workdir {work}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
