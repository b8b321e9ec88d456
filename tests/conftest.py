import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(autouse=True)
def _seeded_weights():
  """Every in-process test starts from the same Keras/TF/NumPy seed, so weights that a test
  leaves to their random initializers are the same on every run and every machine (an unseeded
  draw once left all hidden ReLUs of a tiny attention MLP dead on CI). Tests whose subject is
  the seed set their own."""
  if "keras" in sys.modules:
    sys.modules["keras"].utils.set_random_seed(0)
  yield


TINY = ["--impressions", "6000", "--ads", "80", "--categories", "4", "--users", "200"]
# The baseline gate is off here (--baseline-margin -1): at 45 steps the tiny models do not beat the
# heuristic baselines; test_a_model_below_the_best_baseline_is_not_blessed_nor_pushed turns it on.
RUN = ["--train-steps", "45", "--eval-steps", "5", "--epochs", "3", "--auc-floor", "0.58",
       "--baseline-margin=-1"]


def quadrant_colours(img) -> dict:
  """Reads the disc colour of every quadrant of a sample image back from its pixels
  (independently of the generator): per quadrant, the colour covering most pixels."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from cscnn.data.sample import COLOURS, QUADRANTS  # pylint: disable=import-outside-toplevel
  img = np.asarray(img).astype(int)
  h = img.shape[0] // 2
  out = {}
  for qi, name in enumerate(QUADRANTS):
    part = img[:h] if qi < 2 else img[h:]
    part = part[:, :h] if qi % 2 == 0 else part[:, h:]
    counts = {c: int((np.abs(part - np.array(rgb)).sum(-1) < 10).sum()) for c, rgb in COLOURS.items()}
    out[name] = max(counts, key=counts.get)
    assert counts[out[name]] > 10, f"no disc in {name}"
  return out


def cscnn(*args, check=True):
  proc = subprocess.run([sys.executable, "-m", "cscnn", *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=900)
  if check and proc.returncode != 0:
    raise AssertionError(f"cscnn {' '.join(args)} exited {proc.returncode}:\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
  return proc


def pytest_collection_modifyitems(config, items):
  """`run_dir` runs the whole pipeline (minutes): a test that uses it must be marked slow, or
  `make test-fast` (-m "not slow") would run the pipeline too."""
  unmarked = [item.nodeid for item in items
              if "run_dir" in getattr(item, "fixturenames", ()) and item.get_closest_marker("slow") is None]
  if unmarked:
    raise pytest.UsageError("tests that use the run_dir fixture (a pipeline run) must be marked slow: "
                            + ", ".join(unmarked))


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
  base = tmp_path_factory.mktemp("e2e")
  data, out = str(base / "data"), str(base / "out")
  cscnn("data", "sample", "--out", data, "--seed", "1", *TINY)
  first = cscnn("pipeline", "run", "--data", data, "--output", out, *RUN,
                "--beam-arg=--direct_running_mode=multi_processing", "--beam-arg=--direct_num_workers=2")
  summary = json.loads(cscnn("pipeline", "summary", "--output", out, "--json").stdout)
  return {"data": data, "out": out, "first_stdout": first.stdout, "first": summary,
          "serving": os.path.join(out, "serving", "cscnn_ctr")}


