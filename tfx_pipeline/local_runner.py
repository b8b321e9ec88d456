"""Runs the pipeline with LocalDagRunner and an SQLite MLMD store. Only resolves paths:
the pipeline itself is `tfx_pipeline.pipeline.create_pipeline`.

Layout under OUTPUT: ``pipeline/`` (artifacts), ``metadata.sqlite`` (MLMD),
``serving/<model_name>/<version>/`` (pushed SavedModels).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from tfx import v1 as tfx

from tfx_pipeline import configs
from tfx_pipeline.pipeline import create_pipeline


def paths(output_dir: str) -> Dict[str, str]:
  output_dir = os.path.abspath(output_dir)
  return {
      "pipeline_root": os.path.join(output_dir, "pipeline"),
      "metadata": os.path.join(output_dir, "metadata.sqlite"),
      "serving": os.path.join(output_dir, "serving", configs.MODEL_NAME),
  }


def run(data_root: str, output_dir: str, beam_pipeline_args: Optional[List[str]] = None,
        **pipeline_kwargs: Any) -> Dict[str, str]:
  p = paths(output_dir)
  os.makedirs(os.path.dirname(p["metadata"]), exist_ok=True)
  pipeline = create_pipeline(
      pipeline_name=configs.PIPELINE_NAME,
      pipeline_root=p["pipeline_root"],
      data_root=os.path.abspath(data_root),
      serving_model_dir=p["serving"],
      metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
          p["metadata"]),
      beam_pipeline_args=beam_pipeline_args,
      **pipeline_kwargs)
  tfx.orchestration.LocalDagRunner().run(pipeline)
  return p
