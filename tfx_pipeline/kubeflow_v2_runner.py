"""Compiles the same `create_pipeline(...)` for Kubeflow Pipelines v2 (KubeflowV2DagRunner).

Only resolves paths and parameters. The data root and the pipeline root are run-time
parameters of the compiled job (``data_root``; the pipeline root is KFP's ``gcsOutputDirectory``
/ pipeline root, overridable when the job is submitted). Every component runs in IMAGE, built
from the repo's Dockerfile, which installs the project at /opt/cscnn.

Because the data root is only known when the job runs, the input layout (flat
``impressions/*.csv``, hash-split by ExampleGen, or pre-split ``impressions/train|eval/*.csv``)
cannot be detected from the files at compile time: it is a compile-time choice
(``input_layout``, default flat; `cscnn pipeline compile --input-layout`).
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional

from tfx import v1 as tfx

from spec.features import DEFAULT_SPEC, FeatureSpec
from tfx_pipeline import configs
from tfx_pipeline.pipeline import create_pipeline

IMAGE_PROJECT_DIR = "/opt/cscnn"   # WORKDIR of the Dockerfile
IMAGE_SCHEMA_PATH = os.path.join(IMAGE_PROJECT_DIR, "tfx_pipeline", "schema", "schema.pbtxt")


def compile_pipeline(image: str, output_file: str, pipeline_root: str = "gs://YOUR_BUCKET/cscnn",
                     data_root: str = "gs://YOUR_BUCKET/cscnn/data", serving_dir: Optional[str] = None,
                     beam_pipeline_args: Optional[List[str]] = None,
                     input_layout: str = configs.LAYOUT_FLAT, spec: FeatureSpec = DEFAULT_SPEC,
                     schema_path: Optional[str] = None, **pipeline_kwargs) -> Dict:
  """`schema_path`: the schema file as the cluster reads it; None: the container's copy of the
  project's schema, which fits the default spec only (a spec file's schema: `cscnn schema --spec
  FILE`, uploaded where the job can read it)."""
  if schema_path is None:
    if spec != DEFAULT_SPEC:
      raise ValueError("a spec other than the project's default needs its schema: write it with "
                       "`cscnn schema --spec FILE`, upload it and pass its URL as schema_path")
    schema_path = IMAGE_SCHEMA_PATH
  data = tfx.dsl.experimental.RuntimeParameter(name="data_root", ptype=str, default=data_root)
  pipeline = create_pipeline(
      pipeline_name=configs.PIPELINE_NAME,
      pipeline_root=pipeline_root,
      data_root=data,
      serving_model_dir=serving_dir or os.path.join(pipeline_root, "serving", configs.MODEL_NAME),
      beam_pipeline_args=beam_pipeline_args,
      schema_path=schema_path,
      spec=spec,
      input_layout=input_layout,
      **pipeline_kwargs)
  runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
      config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
      output_dir=os.path.dirname(os.path.abspath(output_file)),
      output_filename=os.path.basename(output_file))
  return runner.run(pipeline, write_out=True)
