"""Airflow DAG of the CTR pipeline: one task per TFX component, in the pipeline's order.

Airflow 3 and TFX 1.21 do not share an environment (TFX's own Airflow runner targets Airflow 2,
which does not accept Python 3.13), so this file imports Airflow only. Each task runs its TFX
component as a partial run of the very same `create_pipeline(...)` in the project's Python:

    <python> -m cscnn pipeline run --data DATA --output OUTPUT --only-node COMPONENT_ID

Inputs of a component come from the latest run in OUTPUT's MLMD store, which the upstream
tasks have just written. The components and their dependencies are in `nodes.json`, generated
by `bin/cscnn pipeline nodes --json` (a test keeps it in step with the pipeline).

Settings (environment variables of the Airflow worker):
  CSCNN_DATA     data folder (impressions/, ads/, images/)       default: <repo>/demo/data
  CSCNN_OUTPUT   pipeline output (MLMD, artifacts, serving/)      default: <repo>/demo/airflow
  CSCNN_PYTHON   the project's Python (make setup's environment)  default: /opt/venv/bin/python
                 in the Debian 13 chroot, else <repo>/.venv/bin/python
  CSCNN_RUN_ARGS extra `pipeline run` arguments (e.g. "--train-steps 50")
"""

import json
import os
import shlex
from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
with open(os.path.join(HERE, "nodes.json")) as f:
  NODES = json.load(f)

DATA = os.environ.get("CSCNN_DATA", os.path.join(ROOT, "demo", "data"))
OUTPUT = os.environ.get("CSCNN_OUTPUT", os.path.join(ROOT, "demo", "airflow"))
PYTHON = os.environ.get("CSCNN_PYTHON") or next(
    (p for p in ("/opt/venv/bin/python", os.path.join(ROOT, ".venv", "bin", "python")) if os.path.exists(p)),
    "python3")
EXTRA = os.environ.get("CSCNN_RUN_ARGS", "")

with DAG(dag_id="cscnn_ctr", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
         tags=["cscnn", "tfx"], doc_md=__doc__) as dag:
  tasks = {}
  for node in NODES:
    command = (f"cd {shlex.quote(ROOT)} && PYTHONPATH={shlex.quote(ROOT)} {shlex.quote(PYTHON)} -m cscnn "
               f"pipeline run --data {shlex.quote(DATA)} --output {shlex.quote(OUTPUT)} "
               f"--only-node {node['id']} --skip-input-check {EXTRA}")
    tasks[node["id"]] = BashOperator(task_id=node["id"], bash_command=command)
  for node in NODES:
    for upstream in node["upstream"]:
      tasks[upstream] >> tasks[node["id"]]
