"""The Airflow DAG: in step with the pipeline, loaded by Airflow's own DagBag with zero import
errors, and run once on a tiny sample with `airflow dags test` (Airflow 3, its own venv from
`make airflow`; every task runs one TFX component of the same create_pipeline)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, TINY, cscnn

# Airflow (its own venv, `make airflow`); `airflow dags test` runs the pipeline; listing the nodes takes ~12 s
pytestmark = pytest.mark.slow

DAG_FOLDER = os.path.join(ROOT, "tfx_pipeline", "airflow")
AIRFLOW_PYTHON = next((p for p in (os.environ.get("CSCNN_AIRFLOW_PYTHON"), "/opt/airflow/bin/python",
                                   os.path.join(ROOT, ".venv-airflow", "bin", "python")) if p and os.path.exists(p)),
                      None)


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory):
  assert AIRFLOW_PYTHON, "Airflow is not installed: run `make airflow`"
  home = tmp_path_factory.mktemp("airflow_home")
  env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": DAG_FOLDER,
         "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "CSCNN_PYTHON": sys.executable}
  return env


def _airflow(env, *args, timeout=900):
  airflow = os.path.join(os.path.dirname(AIRFLOW_PYTHON), "airflow")
  return subprocess.run([airflow, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_nodes_json_matches_the_pipeline():
  nodes = json.loads(cscnn("pipeline", "nodes", "--json").stdout)
  with open(os.path.join(DAG_FOLDER, "nodes.json")) as f:
    assert json.load(f) == nodes, "regenerate: bin/cscnn pipeline nodes --json > tfx_pipeline/airflow/nodes.json"


def test_dagbag_loads_with_the_pipeline_components_in_order(airflow_env):
  script = (
      "import json\n"
      "from airflow.dag_processing.dagbag import DagBag\n"
      f"b = DagBag(dag_folder={DAG_FOLDER!r})\n"
      "d = b.dags['cscnn_ctr']\n"
      "print(json.dumps({'errors': {k: str(v) for k, v in b.import_errors.items()},\n"
      "  'upstream': {t: sorted(d.get_task(t).upstream_task_ids) for t in d.task_ids}}))\n")
  proc = subprocess.run([AIRFLOW_PYTHON, "-c", script], env=airflow_env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = json.loads(proc.stdout.strip().splitlines()[-1])
  assert got["errors"] == {}
  with open(os.path.join(DAG_FOLDER, "nodes.json")) as f:
    nodes = json.load(f)
  assert got["upstream"] == {n["id"]: n["upstream"] for n in nodes}


def test_airflow_dags_test_runs_the_pipeline_once(airflow_env, tmp_path):
  data, out = str(tmp_path / "data"), str(tmp_path / "out")
  cscnn("data", "sample", "--out", data, "--seed", "4", *TINY)
  env = {**airflow_env, "CSCNN_DATA": data, "CSCNN_OUTPUT": out,
         "CSCNN_RUN_ARGS": "--train-steps 30 --eval-steps 3 --auc-floor 0.5 --baseline-margin=-1"}
  migrate = _airflow(env, "db", "migrate")
  assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-2000:]
  run = _airflow(env, "dags", "test", "cscnn_ctr")
  log = run.stdout + run.stderr
  assert run.returncode == 0, log[-4000:]
  assert "state=success" in log
  summary = json.loads(cscnn("pipeline", "summary", "--output", out, "--json").stdout)
  assert summary["blessed"] and summary["pushed"], summary
  versions = os.listdir(os.path.join(out, "serving", "cscnn_ctr"))
  assert len(versions) == 1 and os.path.exists(os.path.join(out, "serving", "cscnn_ctr", versions[0], "saved_model.pb"))
