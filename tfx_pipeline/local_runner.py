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
        only_node: Optional[str] = None, **pipeline_kwargs: Any) -> Dict[str, str]:
  """Runs the whole pipeline, or with `only_node` one component as a TFX partial run whose
  inputs come from the latest run recorded in the same MLMD store (how the Airflow DAG runs
  one task per component)."""
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
  if only_node is None:
    tfx.orchestration.LocalDagRunner().run(pipeline)
    return p
  from tfx.orchestration import pipeline as pipeline_lib  # pylint: disable=import-outside-toplevel
  ids = [c.id for c in pipeline.components]
  if only_node not in ids:
    raise ValueError(f"no component {only_node!r} in the pipeline; components: {ids}")
  tfx.orchestration.LocalDagRunner().run(
      pipeline, run_options=pipeline_lib.RunOptions(from_nodes=[only_node], to_nodes=[only_node]))
  return p


def nodes(**pipeline_kwargs: Any) -> List[Dict[str, Any]]:
  """The pipeline's components in topological order with their upstream component ids."""
  pipeline = create_pipeline(pipeline_name=configs.PIPELINE_NAME, pipeline_root="/unused",
                             data_root="/unused", serving_model_dir="/unused", **pipeline_kwargs)
  return [{"id": c.id, "upstream": sorted(u.id for u in c.upstream_nodes)} for c in pipeline.components]
