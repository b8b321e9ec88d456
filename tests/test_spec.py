"""Feature spec files: the default spec round-trips, and a bad spec stops with its file, line and key."""

import textwrap

import pytest

from spec.features import DEFAULT_SPEC, NUMERIC, SEQUENCE, Feature, FeatureSpec, SpecError
from spec.files import SpecFileError, dumps, load, parse

GOOD = textwrap.dedent("""\
    labels: [click]
    roles: {user: customer, ad: item, category: ptype}
    features:
      - {name: customer, kind: categorical}
      - {name: item, kind: categorical, min_count: 3}
      - {name: ptype, kind: categorical}
      - name: price
        kind: numeric
        normalize: log1p_zscore
      - {name: history, kind: sequence, max_len: 20, time_column: history_age}
    """)


def _error(text: str) -> str:
  with pytest.raises(SpecFileError) as e:
    parse(text, "my.yaml")
  return str(e.value)


def test_the_default_spec_round_trips_through_its_file_form(tmp_path):
  assert parse(dumps(DEFAULT_SPEC)) == DEFAULT_SPEC
  assert FeatureSpec.from_json(DEFAULT_SPEC.to_json()) == DEFAULT_SPEC
  path = tmp_path / "spec.yaml"
  path.write_text(dumps(DEFAULT_SPEC, header="the project's spec"))
  assert load(str(path)) == DEFAULT_SPEC


def test_a_spec_file_with_other_columns():
  spec = parse(GOOD)
  assert (spec.user, spec.ad, spec.category, spec.label) == ("customer", "item", "ptype", "click")
  assert spec.feature("price").kind == NUMERIC and spec.feature("price").dtype is float
  assert spec.feature("history").kind == SEQUENCE and spec.time_columns == ("history_age",)
  assert spec.raw_columns == ("click", "customer", "item", "ptype", "price", "history", "history_age")
  assert spec.serving_columns == spec.raw_columns[1:]
  assert [f.name for f in spec.features if f.embedded] == ["customer", "item", "ptype", "history"]
  assert parse(dumps(spec)) == spec


@pytest.mark.parametrize("change, expected", [
    (("kind: numeric", "kind: numbers"), "my.yaml:8: features[3].kind: feature 'price': unknown kind 'numbers'"),
    (("roles: {user: customer", "roles: {user: shopper"),
     "my.yaml:2: roles.user: role user points to 'shopper', which is not a feature"),
    (("labels: [click]", "labels: [click, click]"), "my.yaml:1: labels[1]: label 'click' is declared twice"),
    (("min_count: 3", "min_count: 3, colour: red"), "my.yaml:5: features[1].colour: unknown option"),
    (("min_count: 3", "min_count: many"), "my.yaml:5: features[1].min_count: must be an integer, got 'many'"),
    (("{name: ptype, kind: categorical}", "{name: ptype, kind: numeric}"),
     "my.yaml:2: roles.category: role category needs a categorical feature; 'ptype' is numeric"),
    (("{name: customer, kind: categorical}", "{name: item, kind: categorical}"),
     "my.yaml:5: features[1].name: feature 'item' is declared twice"),
    (("labels: [click]", "labels: [price]"), "my.yaml:1: labels[0]: 'price' is both a label and a feature"),
    (("normalize: log1p_zscore", "normalize: log2"), "my.yaml:9: features[3].normalize: feature 'price': "
                                                      "unknown normalization 'log2'"),
    (("roles: {user: customer, ad: item, category: ptype}", "roles: {user: customer, ad: item}"),
     "my.yaml:2: roles: roles misses category"),
    (("  - {name: customer", "  - {nme: customer"), "my.yaml:4: features[0].nme: unknown option"),
])
def test_a_bad_spec_names_the_line_and_the_key(change, expected):
  old, new = change
  assert old in GOOD
  assert _error(GOOD.replace(old, new)).startswith(expected)


def test_unreadable_spec_files():
  assert _error("features: [\n").startswith("my.yaml:2: not valid YAML")
  assert _error("") == "my.yaml: empty spec file"
  with pytest.raises(SpecFileError, match="cannot read the spec file"):
    load("/no/such/spec.yaml")


def test_feature_options_are_checked():
  with pytest.raises(SpecError, match="buckets is for numeric features"):
    Feature("x", "categorical", str, buckets=4)
  with pytest.raises(SpecError, match="time_column is for sequence features"):
    Feature("x", "multi", str, time_column="t")
  with pytest.raises(SpecError, match="against is for sequence features"):
    Feature("x", "multi", str, max_len=3, against="category_id")
  with pytest.raises(SpecError, match="max_len is for token lists"):
    Feature("x", "categorical", str, max_len=3)
  with pytest.raises(SpecError, match="float is for numeric features"):
    Feature("x", "categorical", float)
  assert not Feature("p", NUMERIC, float).embedded and Feature("p", NUMERIC, float, buckets=4).embedded


def test_a_sequence_is_read_against_a_categorical_feature_of_the_spec():
  text = GOOD + "  - {name: history_types, kind: sequence, max_len: 20, against: ptype}\n"
  spec = parse(text)
  assert spec.against(spec.feature("history_types")) == "ptype"
  assert spec.against(spec.feature("history")) == "item"            # the ad by default
  assert parse(dumps(spec)) == spec
  assert _error(text.replace("against: ptype", "against: price")) == (
      "my.yaml:11: features[5].against: feature 'history_types': against must name a categorical "
      "feature, got 'price'")
  assert "got 'colour'" in _error(text.replace("against: ptype", "against: colour"))


def test_a_column_the_data_lacks_is_named_with_its_line_in_the_spec(tmp_path, capsys):
  from cscnn.cli import main
  spec_path = tmp_path / "spec.yaml"
  spec_path.write_text(GOOD)
  (tmp_path / "data" / "impressions").mkdir(parents=True)
  (tmp_path / "data" / "impressions" / "impressions.csv").write_text(
      "click,customer,item,ptype,history,history_age\n1,c1,i1,p1,i2,3\n")
  code = main(["pipeline", "run", "--data", str(tmp_path / "data"), "--output", str(tmp_path / "out"),
               "--spec", str(spec_path), "--variant", "none"])
  assert code == 2
  assert f"{spec_path}:7: features[3].name: column 'price' is not in " in capsys.readouterr().err
  assert not (tmp_path / "out").exists()
