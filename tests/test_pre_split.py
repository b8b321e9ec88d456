"""Pre-split input (impressions/train/*.csv + impressions/eval/*.csv): ExampleGen takes the two
folders as its splits as they are; flat impressions/*.csv keeps the 4:1 hash split; mixed or
incomplete layouts are errors naming the folder."""

import csv
import dataclasses
import glob
import json
import os

import pytest

from models.visual import VisualConfig
from tfx_pipeline import configs
from tfx_pipeline.settings import TrainerSettings
from spec import features as F
from tfx_pipeline.input_check import InputDataError, check_impressions, detect_layout, input_splits

S = F.DEFAULT_SPEC

NO_IMAGES = TrainerSettings(visual=VisualConfig(variant="none"))

ROW = {S.label: "1", "user_id": "u1", "user_city": "c1", "user_age": "2", S.ad: "a1",
       S.category: "3", "brand_id": "b1", "hour": "0", "weekday": "0", "query_words": "",
       "title_words": "t1 t2", "clicked_categories": "3 1"}


def _write(path, rows):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(S.raw_columns)
    for r in rows:
      w.writerow([r[c] for c in S.raw_columns])


def _rows(n, user_prefix):
  return [{**ROW, "user_id": f"{user_prefix}{i}", S.label: str(i % 2)} for i in range(n)]


def _pre_split(root, train=5, evals=3):
  _write(os.path.join(root, "impressions", "train", "impressions.csv"), _rows(train, "tr"))
  _write(os.path.join(root, "impressions", "eval", "impressions.csv"), _rows(evals, "ev"))
  return str(root)


def _example_gen(data_root, **kwargs):
  from tfx_pipeline.pipeline import create_pipeline
  p = create_pipeline(pipeline_name="t", pipeline_root="/unused", data_root=data_root,
                      serving_model_dir="/unused", trainer=NO_IMAGES, **kwargs)
  gen = p.components[0]
  assert gen.id == "CsvExampleGen"
  return gen


def _configs(gen):
  inp = json.loads(gen.exec_properties["input_config"])
  out = gen.exec_properties.get("output_config")
  out = json.loads(out) if out else {}
  return inp, out


def test_pre_split_layout_gives_two_input_splits_and_no_hash_split(tmp_path):
  root = _pre_split(tmp_path)
  assert detect_layout(root) == configs.LAYOUT_PRE_SPLIT
  inp, out = _configs(_example_gen(root))
  assert inp["splits"] == [{"name": "train", "pattern": "impressions/train/*.csv"},
                           {"name": "eval", "pattern": "impressions/eval/*.csv"}]
  assert "hash_buckets" not in json.dumps(out) and "hashBuckets" not in json.dumps(out)


def test_flat_layout_keeps_the_4_to_1_hash_split(tmp_path):
  _write(str(tmp_path / "impressions" / "impressions.csv"), _rows(4, "u"))
  inp, out = _configs(_example_gen(str(tmp_path)))
  assert inp["splits"] == [{"name": "impressions", "pattern": "impressions/*.csv"}]
  buckets = {s["name"]: s.get("hash_buckets", s.get("hashBuckets")) for s in out["split_config"]["splits"]}
  assert buckets == {"train": 4, "eval": 1}


def test_explicit_layout_needs_no_files_and_run_time_parameter_needs_it():
  from tfx import v1 as tfx
  inp, _ = _configs(_example_gen("/does/not/exist", input_layout=configs.LAYOUT_PRE_SPLIT))
  assert [s["name"] for s in inp["splits"]] == ["train", "eval"]
  param = tfx.dsl.experimental.RuntimeParameter(name="data_root", ptype=str, default="gs://b/d")
  with pytest.raises(ValueError, match="input_layout"):
    _example_gen(param)
  inp, _ = _configs(_example_gen(param, input_layout=configs.LAYOUT_PRE_SPLIT))
  assert [s["pattern"] for s in inp["splits"]] == [configs.TRAIN_PATTERN, configs.EVAL_PATTERN]
  with pytest.raises(ValueError, match="input layout must be one of"):
    input_splits(layout="hashed")


def test_mixed_layout_is_an_error_naming_the_folder(tmp_path):
  root = _pre_split(tmp_path)
  _write(os.path.join(root, "impressions", "more.csv"), _rows(2, "x"))
  with pytest.raises(InputDataError, match=f"{os.path.join(root, 'impressions')} mixes both"):
    check_impressions(root)
  with pytest.raises(InputDataError, match="mixes both"):
    _example_gen(root)


@pytest.mark.parametrize("present,missing", [("train", "eval"), ("eval", "train")])
def test_only_one_of_train_eval_is_an_error_naming_the_missing_folder(tmp_path, present, missing):
  _write(str(tmp_path / "impressions" / present / "part.csv"), _rows(2, "x"))
  (tmp_path / "impressions" / missing).mkdir()   # present but empty still counts as missing
  with pytest.raises(InputDataError) as e:
    check_impressions(str(tmp_path))
  assert f"{tmp_path / 'impressions' / missing} has none" in str(e.value)
  with pytest.raises(InputDataError, match=f"{missing} has none"):
    _example_gen(str(tmp_path))


def test_input_check_reads_both_split_folders(tmp_path):
  root = _pre_split(tmp_path, train=5, evals=3)
  assert check_impressions(root) == 8
  bad = _rows(3, "ev")
  bad[1]["hour"] = "noon"
  eval_csv = os.path.join(root, "impressions", "eval", "impressions.csv")
  _write(eval_csv, bad)
  with pytest.raises(InputDataError, match=f"{eval_csv}:3: field 'hour' must be an integer"):
    check_impressions(root)
  _write(eval_csv, [])
  with pytest.raises(InputDataError, match="the eval split has no rows"):
    check_impressions(root)


def test_example_gen_writes_the_folders_as_its_splits(tmp_path):
  """CsvExampleGen really run (LocalDagRunner): every train row lands in Split-train, every
  eval row in Split-eval (a hash split would mix them)."""
  import tensorflow as tf
  from google.protobuf import json_format
  from tfx import v1 as tfx
  root = _pre_split(tmp_path / "data", train=7, evals=4)
  built = _example_gen(root)
  # the same ExampleGen configuration, in a pipeline of its own (a component belongs to one pipeline)
  out_config = built.exec_properties.get("output_config")
  gen = tfx.components.CsvExampleGen(
      input_base=built.exec_properties["input_base"],
      input_config=json_format.Parse(built.exec_properties["input_config"], tfx.proto.Input()),
      output_config=json_format.Parse(out_config, tfx.proto.Output()) if out_config else None)
  out = tmp_path / "out"
  tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
      pipeline_name="pre-split", pipeline_root=str(out / "pipeline"), components=[gen],
      metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
          str(out / "metadata.sqlite"))))
  users = {}
  for split in ("train", "eval"):
    files = glob.glob(str(out / "pipeline" / "CsvExampleGen" / "examples" / "*" / f"Split-{split}" / "*"))
    assert files, split
    users[split] = sorted(
        tf.train.Example.FromString(r.numpy()).features.feature["user_id"].bytes_list.value[0].decode()
        for r in tf.data.TFRecordDataset(files, compression_type="GZIP"))
  assert users == {"train": sorted(f"tr{i}" for i in range(7)), "eval": sorted(f"ev{i}" for i in range(4))}


def test_kubeflow_compile_takes_the_layout_explicitly(tmp_path):
  """data_root is a run-time parameter on Kubeflow: the layout is a compile-time choice."""
  from tfx_pipeline.kubeflow_v2_runner import compile_pipeline
  out = tmp_path / "pipeline.json"
  compile_pipeline("registry.example.com/cscnn:test", str(out), trainer=NO_IMAGES,
                   input_layout=configs.LAYOUT_PRE_SPLIT)
  job = out.read_text()
  assert "impressions/train/*.csv" in job and "impressions/eval/*.csv" in job
  example_gen = next(v for k, v in json.loads(job)["pipelineSpec"]["deploymentSpec"]["executors"].items()
                     if "CsvExampleGen" in k)
  assert "hash_buckets" not in json.dumps(example_gen) and "hashBuckets" not in json.dumps(example_gen)


def test_kubeflow_compile_of_another_spec_needs_its_schema(tmp_path):
  from tfx_pipeline.kubeflow_v2_runner import compile_pipeline
  from spec.features import DEFAULT_SPEC
  other = dataclasses.replace(DEFAULT_SPEC, labels=("click",))
  with pytest.raises(ValueError, match="needs its schema"):
    compile_pipeline("registry.example.com/cscnn:test", str(tmp_path / "p.json"), trainer=NO_IMAGES, spec=other)
  compile_pipeline("registry.example.com/cscnn:test", str(tmp_path / "p.json"), trainer=NO_IMAGES, spec=other,
                   schema_path="gs://bucket/schema.pbtxt", input_layout=configs.LAYOUT_FLAT)
  assert "gs://bucket/schema.pbtxt" in (tmp_path / "p.json").read_text()
