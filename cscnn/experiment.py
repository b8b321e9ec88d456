"""`cscnn experiment ablation`: the paper's comparisons as restartable grids of pipeline runs.

Every cell is one full pipeline run (same data, same ExampleGen split, same training budget)
of one configuration with one trainer seed. All cells run in one pipeline output,
``OUTPUT/run/``, with the TFX cache on: ExampleGen, StatisticsGen, Transform and AdCatalogGen
run once for the whole grid (their inputs do not change), the Trainer, VisualEmbeddingGen and
Evaluator once per cell. A finished cell leaves ``OUTPUT/cells/<label>_seed<k>/result.json``
(written atomically, with the cell's log beside it and the fingerprint of the code that ran it,
`tfx_pipeline.code_version`) and is never recomputed, so an interrupted experiment resumes where
it stopped (a result kept from other code says so in the log); a rerun with other arguments
(data, training steps, backbone, ``--run-arg``) into the same output is refused rather than
mixed with them. A cell
whose configuration (data, arguments, seed) a finished cell in OUTPUT already has, under another
label or grid, takes that cell's result instead of training the same model again: Table 5's
cbam and cscnn and Figure 5's C' = 20 and H' = 7 are the variants grid's cbam and cscnn. The
table (Markdown and CSV, mean and std over seeds and every seed's value) and a plot are rebuilt
from the cells at the end, one set per grid (``OUTPUT/<grid>.md``, ``.csv``, ``.png``).

Grids:
- ``variants`` (Table 8 / Table 4): the visual variants given with ``--variants``.
- ``table5``: SE, CBAM-channel and CBAM, each without and with the category prior.
- ``figure5``: CSCNN's hyper-parameters C', H' = W' and L' one at a time.
- ``init``: each variant given with ``--variants`` from each image-encoder start given with
  ``--inits`` (``pipeline run --visual-init``), labelled ``<variant>-<init>``; the scratch cell is
  the variants grid's cell of that variant.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from spec import choices
from tfx_pipeline.code_version import code_fingerprint

METRICS = (("auc", "AUC"), ("per_user_auc", "per-user AUC"), ("cold_auc", "cold-ad AUC"))

def _figure5_cells() -> List[Tuple[str, List[str]]]:
  """C', H' = W' and L' one at a time. The cell at the default C' or H' is spelled as plain
  ``--variant cscnn``, so it is the same configuration (and the same cell) as the cscnn cell of
  the variants grid and of the other sweep."""
  from models.attention import AttentionConfig  # pylint: disable=import-outside-toplevel
  default = AttentionConfig()

  def cell(name, flag, value, default_value):
    return (f"{name}={value}", ["--variant", "cscnn"] + ([] if value == default_value else [flag, str(value)]))

  return ([cell("C'", "--channel-prior", c, default.channel_prior) for c in (5, 10, 20, 40)]
          + [cell("H'", "--spatial-prior", h, default.spatial_prior) for h in (3, 5, 7, 9)]
          + [(f"L'={n}", ["--variant", "cscnn", "--attention-layers", str(n)]) for n in (1, 2, 3)])


# Table 5: the kinds that are variants of their own (cbam, cscnn) are spelled as those variants,
# the same configurations as the variants grid's cells.
GRIDS = {
    "table5": [(k, ["--variant", "cscnn", "--attention", k])
               for k in ("se", "se_prior", "cbam_channel", "cbam_channel_prior")]
              + [(k, ["--variant", k]) for k in ("cbam", "cscnn")],
    "figure5": _figure5_cells,
}


def init_label(variant: str, init: str) -> str:
  """The init grid's label of a cell: the variant started from `init`."""
  return f"{variant}-{init}"


def steps_for(grid: str, labels: Sequence[str]) -> List[Tuple[str, str]]:
  """The pairs (A, B) whose gain B - A a grid's table reports, paired by seed: the variants in
  the order given (the paper's Table 8 reads none < fixed < finetune < cbam < cscnn); Table 5's
  kinds without and with the category prior; each pretrained start against scratch for the same
  variant (init grid); none for the Figure 5 sweep."""
  if grid == "variants":
    return list(zip(labels, labels[1:]))
  if grid == "init":   # labels are init_label(variant, init); neither name holds a "-"
    return [(init_label(v, choices.SCRATCH), label) for label in labels
            for v, _, init in [label.rpartition("-")]
            if init != choices.SCRATCH and init_label(v, choices.SCRATCH) in labels]
  if grid == "table5":
    return [(a, b) for a, b in (("se", "se_prior"), ("cbam_channel", "cbam_channel_prior"),
                                ("cbam", "cscnn")) if a in labels and b in labels]
  return []


def cells_for(grid: str, variants: Sequence[str],
              inits: Sequence[str] = (choices.SCRATCH, choices.CATALOGUE)) -> List[Tuple[str, List[str]]]:
  if grid in ("variants", "init"):
    unknown = [v for v in variants if v not in choices.VISUAL_VARIANTS]
    if unknown:   # before any cell runs, not when the grid reaches it
      raise ValueError(f"unknown variant(s) {', '.join(unknown)}; "
                       f"choose from {', '.join(choices.VISUAL_VARIANTS)}")
  if grid == "variants":
    return [(v, ["--variant", v]) for v in variants]
  if grid == "init":
    bad = [i for i in inits if i not in choices.VISUAL_INITS] or [v for v in variants if v == "none"]
    if bad:
      raise ValueError(f"the init grid starts the image encoder of visual variants from "
                       f"{', '.join(choices.VISUAL_INITS)}; got {', '.join(bad)}")
    return [(init_label(v, i), ["--variant", v] + ([] if i == choices.SCRATCH else ["--visual-init", i]))
            for v in variants for i in inits]
  if grid not in GRIDS:
    raise ValueError(f"grid must be variants, init, {', '.join(GRIDS)}; got {grid!r}")
  cells = GRIDS[grid]
  return cells() if callable(cells) else cells


def _cell_result(summary: Dict, label: str, seed: int, wall: float) -> Dict:
  m = summary["metrics"]
  return {"label": label, "seed": seed, "auc": m["overall"]["auc"],
          "per_user_auc": m["overall"].get("per_user_auc"),
          "cold_auc": m.get("ad_is_cold=1", {}).get("auc"),
          "cold_rows": int(m.get("ad_is_cold=1", {}).get("example_count", 0)),
          "eval_rows": int(m["overall"].get("example_count", 0)), "wall_time_s": round(wall, 1),
          "baselines": {kind: {"auc": b.get("overall", {}).get("auc"),
                               "per_user_auc": b.get("overall", {}).get("per_user_auc"),
                               "cold_auc": b.get("ad_is_cold=1", {}).get("auc")}
                        for kind, b in summary.get("baselines", {}).get("metrics", {}).items()}}


def baseline_results(results: List[Dict]) -> List[Dict]:
  """The heuristic baselines as table cells (label ``baseline: KIND``, one per seed of the cells
  that report them; they are fitted on the data alone, so every seed gives the same numbers)."""
  out = {}
  for r in results:
    for kind, m in (r.get("baselines") or {}).items():
      out.setdefault((kind, r["seed"]), {"label": f"baseline: {kind}", "seed": r["seed"], **m})
  return [out[k] for k in sorted(out)]


def _other_code(result: Dict, code: str) -> str:
  """' (run by code X; the code is now Y)' for a result that other code made, else ''."""
  old = result.get("code_version")
  return f" (run by code {old}; the code is now {code})" if old not in (None, code) else ""


def finished_cells(output: str) -> List[Tuple[str, Dict]]:
  """(path, result) of every finished cell in an experiment folder, in path order."""
  cells = []
  for path in sorted(glob.glob(os.path.join(output, "cells", "*", "result.json"))):
    with open(path) as f:
      cells.append((path, json.load(f)))
  return cells


def run_ablation(data: str, output: str, grid: str = "variants",
                 variants: Sequence[str] = choices.TABLE8_VARIANTS,
                 seeds: int = 3, run_args: Sequence[str] = (), log=print,
                 inits: Sequence[str] = (choices.SCRATCH, choices.CATALOGUE)) -> List[Dict]:
  cells = cells_for(grid, variants, inits)
  plan = []                                      # seed-major: a partial run already compares variants
  for seed in range(seeds):
    for label, args in cells:
      cell = os.path.join(output, "cells", f"{label}_seed{seed}".replace("'", "").replace("=", ""))
      plan.append((label, seed, args, cell, [os.path.abspath(data), *args, *run_args]))
  # Every finished cell in OUTPUT, of this grid or another, read once.
  on_disk = {os.path.dirname(path): r for path, r in finished_cells(output)}
  kept = {}
  for label, seed, _, cell, cell_args in plan:   # every kept cell is checked before any cell runs
    if cell in on_disk:
      kept[cell] = on_disk[cell]
      if kept[cell].get("args", cell_args) != cell_args:   # cells from before args were recorded pass
        raise ValueError(
            f"cell {label} seed {seed} in {cell} was run with {kept[cell]['args']}, not {cell_args}: "
            "a finished cell is never recomputed, so give this experiment its own --output")
  # By configuration and seed: a cell whose configuration was already run under another label
  # takes that result instead of training the same model again (e.g. figure5's C'=20 and the
  # variants grid's cscnn).
  finished = {}
  for r in on_disk.values():
    if "args" in r:
      finished.setdefault((tuple(r["args"]), r["seed"]), r)
  code = code_fingerprint()
  results, trained = [], []                      # trained: wall times of the cells run here
  t_start = time.time()
  for done, (label, seed, args, cell, cell_args) in enumerate(plan, start=1):
    if cell in kept:
      results.append(kept[cell])
      log(f"[{done}/{len(plan)}] {label} seed {seed}: done before, kept{_other_code(kept[cell], code)}")
      continue
    result_path = os.path.join(cell, "result.json")
    os.makedirs(cell, exist_ok=True)
    same = finished.get((tuple(cell_args), seed))
    if same is not None:
      result = {**same, "label": label, "same_as": same.get("same_as", same["label"])}
      log(f"[{done}/{len(plan)}] {label} seed {seed}: the configuration of {result['same_as']} "
          f"seed {seed}, its result reused: AUC {result['auc']:.4f}{_other_code(same, code)}")
    else:
      t0 = time.time()
      cmd = [sys.executable, "-m", "cscnn", "pipeline", "run", "--data", data, "--output",
             os.path.join(output, "run"), "--cache", "--seed", str(seed), "--auc-floor", "0",
             "--json", *args, *run_args]
      log_path = os.path.join(cell, "log.txt")
      log(f"[{done}/{len(plan)}] {label} seed {seed}: running (its log, as it goes: {log_path})")
      # The run's output goes to log.txt line by line as it comes (a killed grid keeps it);
      # its stdout, which ends with the summary, is also kept here to be read.
      out_lines = []
      with open(log_path, "w") as f, subprocess.Popen(
          cmd, stdout=subprocess.PIPE, stderr=f, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}) as proc:
        for line in proc.stdout:
          f.write(line)
          f.flush()
          out_lines.append(line)
      if proc.returncode != 0:
        with open(log_path) as f:
          tail = f.read()[-2000:]
        raise RuntimeError(f"cell {label} seed {seed} failed (see {log_path}):\n{tail}")
      text = "".join(out_lines)
      summary = json.loads(text[text.index("{\n"):])
      if "metrics" not in summary:
        raise RuntimeError(f"cell {label} seed {seed}: the run's summary has no evaluation metrics (states "
                           f"{summary.get('components')}; see {log_path})")
      result = {**_cell_result(summary, label, seed, time.time() - t0), "args": cell_args,
                "code_version": code}
      finished[(tuple(cell_args), seed)] = result
      trained.append(result["wall_time_s"])
      left = {(tuple(a), s) for _, s, _, c, a in plan[done:]
              if c not in kept and (tuple(a), s) not in finished}
      log(f"[{done}/{len(plan)}] {label} seed {seed}: AUC {result['auc']:.4f} "
          f"({result['wall_time_s']:.0f} s; {(time.time() - t_start) / 60:.1f} min so far, "
          f"{len(left)} to train, about {statistics.fmean(trained) * len(left) / 60:.0f} min)")
    with open(result_path + ".tmp", "w") as f:
      json.dump(result, f, indent=1)
    os.replace(result_path + ".tmp", result_path)
    results.append(result)
  write_table(results, [c[0] for c in cells], output, grid)
  return results


def _present(v) -> bool:
  """A metric that exists: not None (not computed) and not NaN (a slice with no example)."""
  return v is not None and v == v


def _mean_std(values):
  """Mean and sample std (n - 1) of the values that exist (`_present`); the std is None for one
  value (one seed says nothing about the spread, and printing 0 would claim it is none)."""
  values = [v for v in values if _present(v)]
  if not values:
    return None, None
  return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _format_mean_std(mean, std) -> str:
  if mean is None:
    return "n/a"
  return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def table_paths(output: str, grid: str) -> Dict[str, str]:
  """Where a grid's table and plot go: one set per grid, so that the grids that share an OUTPUT
  (and its cells) do not overwrite each other's tables."""
  return {kind: os.path.join(output, f"{grid}{suffix}")
          for kind, suffix in (("markdown", ".md"), ("csv", ".csv"), ("plot", ".png"),
                               ("steps_csv", "_steps.csv"))}


def paired_gains(results: List[Dict], a: str, b: str, metric: str) -> List[float]:
  """B - A of `metric` for each seed both labels have a value of (`_present`), in seed order."""
  by_seed = {lab: {r["seed"]: r[metric] for r in results if r["label"] == lab} for lab in (a, b)}
  return [by_seed[b][s] - by_seed[a][s] for s in sorted(set(by_seed[a]) & set(by_seed[b]))
          if _present(by_seed[a][s]) and _present(by_seed[b][s])]


def step_rows(results: List[Dict], steps: Sequence[Tuple[str, str]]) -> List[Dict]:
  """Each step A -> B: the gain B - A paired by seed (mean and sample std over the seeds both
  have) for every metric, and whether the gain in mean AUC is larger than the seed std of both
  A and B (the margin issue 7 asks the paper's ordering to hold by)."""
  rows = []
  for a, b in steps:
    by_seed = {lab: {r["seed"]: r for r in results if r["label"] == lab} for lab in (a, b)}
    seeds = sorted(set(by_seed[a]) & set(by_seed[b]))
    row = {"step": f"{a} -> {b}", "seeds": len(seeds)}
    for k, _ in METRICS:
      row[f"{k}_gain_mean"], row[f"{k}_gain_std"] = _mean_std(paired_gains(results, a, b, k))
    (mean_a, std_a), (mean_b, std_b) = (_mean_std([r["auc"] for r in by_seed[lab].values()]) for lab in (a, b))
    row["auc_gain_beyond_std"] = (None if std_a is None or std_b is None
                                  else mean_b - mean_a > max(std_a, std_b))
    rows.append(row)
  return rows


def _format_gain(mean, std) -> str:
  if mean is None:
    return "n/a"
  return f"{mean:+.4f}" if std is None else f"{mean:+.4f} ± {std:.4f}"


def _pyplot():
  """matplotlib's pyplot on the file-only Agg backend (imported when a table is drawn)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def write_table(results: List[Dict], labels: Sequence[str], output: str,
                grid: str = "variants", steps: Optional[Sequence[Tuple[str, str]]] = None) -> Dict[str, str]:
  """The grid's table (Markdown, CSV), its plot and, for grids with steps (`steps_for`, or the
  pairs given as `steps`), the gains paired by seed (below the Markdown table and in
  ``<grid>_steps.csv``; a steps CSV left by an earlier run of the same grid is removed when there
  are no steps now)."""
  plt = _pyplot()
  extra = baseline_results(results)
  results = list(results) + extra
  labels = list(labels) + sorted({r["label"] for r in extra})
  by = {label: [r for r in results if r["label"] == label] for label in labels}
  md = ["| configuration | seeds | " + " | ".join(f"{name} (mean ± std)" for _, name in METRICS)
        + " | per seed AUC |", "|---|---|" + "---|" * len(METRICS) + "---|"]
  rows = []
  for label in labels:
    cells = sorted(by[label], key=lambda r: r["seed"])
    stats = {k: _mean_std([r[k] for r in cells]) for k, _ in METRICS}
    md.append(f"| {label} | {len(cells)} | " + " | ".join(_format_mean_std(*stats[k]) for k, _ in METRICS)
              + " | " + ", ".join(f"{r['auc']:.4f}" for r in cells) + " |")
    rows.append({"configuration": label, "seeds": len(cells),
                 **{f"{k}_mean": stats[k][0] for k, _ in METRICS},
                 **{f"{k}_std": stats[k][1] for k, _ in METRICS},
                 "auc_per_seed": " ".join(f"{r['auc']:.4f}" for r in cells)})
  paths = table_paths(output, grid)
  if steps is None:
    steps = steps_for(grid, [label for label in labels if not label.startswith("baseline: ")])
  gains = step_rows(results, steps)
  if gains:
    md += ["", "Gains paired by seed (B - A, mean ± std over the seeds both have); the last column: "
           "is the gain in mean AUC larger than the seed std of A and of B?", "",
           "| step | seeds | " + " | ".join(f"{name} gain" for _, name in METRICS)
           + " | AUC gain > seed std |", "|---|---|" + "---|" * len(METRICS) + "---|"]
    for g in gains:
      beyond = {True: "yes", False: "no", None: "n/a (one seed)"}[g["auc_gain_beyond_std"]]
      md.append(f"| {g['step']} | {g['seeds']} | "
                + " | ".join(_format_gain(g[f"{k}_gain_mean"], g[f"{k}_gain_std"]) for k, _ in METRICS)
                + f" | {beyond} |")
  with open(paths["markdown"], "w") as f:
    f.write("\n".join(md) + "\n")
  for path, table in ((paths["csv"], rows), (paths["steps_csv"], gains)):
    if table:
      with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    elif os.path.exists(path):
      os.remove(path)
  fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.6))
  for ax, (k, name) in zip(axes, METRICS):
    x = range(len(labels))
    for i, label in enumerate(labels):
      vals = [r[k] for r in by[label] if _present(r[k])]
      if vals:
        ax.bar(i, statistics.fmean(vals), color="#9bbbe0")
        ax.scatter([i] * len(vals), vals, color="#1f4e8c", s=12, zorder=3)
    ax.set_xticks(list(x), labels, rotation=30, ha="right")
    ax.set_title(name)
    lows = [r[k] for r in results if _present(r[k])]
    if lows:
      ax.set_ylim(min(lows) - 0.02, max(lows) + 0.02)
  fig.tight_layout()
  fig.savefig(paths["plot"], dpi=110)
  plt.close(fig)
  return paths


COMPARE = "compare"


def parse_configuration(text: str) -> Tuple[str, str, str]:
  """``NAME=FOLDER[:LABEL]`` -> (NAME, FOLDER, LABEL): the cells labelled LABEL (NAME when not
  given) of the experiment folder FOLDER, shown as NAME."""
  name, eq, spec = text.partition("=")
  if not eq or not name or not spec:
    raise ValueError(f"a configuration is NAME=FOLDER[:LABEL], e.g. none=/tmp/exp:none; got {text!r}")
  folder, colon, label = spec.rpartition(":")
  if not colon or not folder or os.sep in label:   # no label given (or the last ':' is in the path)
    folder, label = spec, name
  return name, folder, label


def _plot_gains(results: List[Dict], names: Sequence[str], path: str) -> None:
  """Each configuration's gain over the first, one panel per metric: every seed's paired gain
  (dots), their mean and std (bar), and the first configuration's seed std as a band around 0
  (a mean gain outside the band is larger than the reference's own spread)."""
  plt = _pyplot()
  fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.6))
  for ax, (k, title) in zip(axes, METRICS):
    _, ref_std = _mean_std([r[k] for r in results if r["label"] == names[0]])
    if ref_std:
      ax.axhspan(-ref_std, ref_std, color="#dddddd", label=f"{names[0]}: ± seed std")
    ax.axhline(0, color="#888888", lw=0.8)
    for i, n in enumerate(names[1:]):
      gains = paired_gains(results, names[0], n, k)
      if gains:
        mean, std = _mean_std(gains)
        ax.errorbar(i, mean, yerr=std or 0, fmt="s", color="#1f4e8c", capsize=4)
        ax.scatter([i + 0.15] * len(gains), gains, color="#9bbbe0", s=14, zorder=3)
    ax.set_xticks(range(len(names) - 1), names[1:], rotation=30, ha="right")
    ax.set_title(f"{title}: gain over {names[0]}")
  axes[0].legend(loc="best", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def compare(configurations: Sequence[Tuple[str, str, str]], output: str,
            other_data: bool = False) -> Dict[str, str]:
  """The finished cells of configurations from several experiment folders in one table, each
  configuration against the first paired by seed (``OUTPUT/compare.md``, ``.csv``,
  ``_steps.csv``, ``.png``): e.g. a grid with one ``--run-arg`` against another grid's cells.
  Nothing is trained; the Markdown ends with where each configuration's cells came from.

  `configurations` are (name, experiment folder, cell label). Pairing by seed means the same
  eval rows, so cells whose data folder or eval row count differ are refused, naming both,
  unless `other_data` (e.g. a control on a copy of the data with other images and the same
  split); the eval row counts must match even then."""
  names = [name for name, _, _ in configurations]
  if len(configurations) < 2 or len(set(names)) != len(names):
    raise ValueError(f"compare needs two or more configurations with distinct names; got {names}")
  results, data_of = [], {}
  for name, folder, label in configurations:
    found = []
    for path, r in finished_cells(folder):
      found.append(r["label"])
      if r["label"] != label:
        continue
      data = (r["args"][0] if r.get("args") else None, r.get("eval_rows"))   # None: not recorded
      for other, (other_data_of, cell) in data_of.items():
        differ = [None not in pair and pair[0] != pair[1] for pair in zip(data, other_data_of)]
        if differ[1] or (differ[0] and not other_data):
          raise ValueError(f"{name} ({path}) ran on {data[0]} with {data[1]} eval rows, {other} ({cell}) on "
                           f"{other_data_of[0]} with {other_data_of[1]} eval rows: seeds pair only on the "
                           "same eval rows (another data folder with the same split: --other-data)")
      data_of.setdefault(name, (data, path))
      results.append({**r, "label": name})
    if name not in data_of:
      have = ", ".join(sorted(set(found))) or "none"
      raise ValueError(f"{name}: no finished cell labelled {label!r} in {folder}/cells (labels there: {have})")
  os.makedirs(output, exist_ok=True)
  paths = write_table(results, names, output, COMPARE, steps=[(names[0], name) for name in names[1:]])
  paths["gains_plot"] = os.path.join(output, f"{COMPARE}_gains.png")
  _plot_gains(results, names, paths["gains_plot"])
  with open(paths["markdown"], "a") as f:
    f.write(f"\nGains per seed: {os.path.basename(paths['gains_plot'])}. Cells:\n" + "".join(
        f"- {name}: `{folder}` cells labelled `{label}` (data `{data_of[name][0][0]}`, "
        f"{data_of[name][0][1]} eval rows)\n" for name, folder, label in configurations))
  return paths
