"""MovieLens-1M with posters -> the project's input format (a pre-split data set).

    bin/cscnn data movielens --source ../shared/data/movielens1m_posters --out DIR \\
        [--users N] [--negatives K] [--train-negatives uniform|popularity] [--eval-negatives M] [--seed S]
        [--new-movies SHARE]
    bin/cscnn pipeline run --data DIR --output OUT --on-bad-image blank --cold-by positives \\
        [--variant none|cscnn]

The source (``/work/shared/data/movielens1m_posters``: ``ratings.csv`` user_id,movie_id,rating;
``movies.dat`` ``MovieID::Title (Year)::Genre|Genre`` in ISO-8859-1; ``users.dat``
``UserID::Gender::Age::Occupation::Zip``; ``posters/<MovieID>.jpg``) is read at run time and
NEVER copied: its licence forbids redistribution. The catalogue points at the posters by
absolute path, and DIR must lie outside the repository (or in a git-ignored folder of it).

Protocol (the paper's Amazon protocol, sections 4.2-4.3; implicit feedback)
  * The ad is the movie, its image the poster, its category the FIRST-listed genre.
  * Every rating is a positive (label 1), whatever its value.
  * Per user, with a generator seeded by ``(seed, user_id)`` (so a user's split does not depend
    on which other users are converted): one random rated movie is held out for validation, one
    for test, the rest are training positives. Users with fewer than 3 ratings (none in
    ML-1M, where every user has >= 20) keep all their ratings as training positives and get no
    held-out rows.
  * Negatives are movies the user has NOT rated (held-out ones included, so a held-out movie is
    never a negative), drawn uniformly from the catalogue (every movie rated by anyone in the
    source, 3,706):
      - train: K per training positive (``--negatives``, default 4), drawn with replacement,
        independently per positive; with ``--train-negatives popularity`` each in proportion to
        1 + the movie's training positives over all converted users (from
        ``default_rng([seed, user_id, 2])``, after every user's split), so that negatives
        follow exposure as in an impression log;
      - eval (test): the test positive + M distinct negatives (``--eval-negatives``, default
        20). The pipeline's per-user AUC (eq. 13, ``tfx_pipeline/metrics.py:PerUserAUC``,
        grouped by user_id) over these rows is the paper's per-user AUC with M sampled
        negatives per user (the paper ranks against all non-interacted items; we sample);
      - validation: the same for the validation positive, with its own M negatives.
  * New movies (``--new-movies SHARE``, default 0): a random SHARE of the catalogue is treated
    as ads launched after the training log, the strict item cold start in which only an ad's
    content (poster, genre, title, decade) can rank it. Such a movie gets no training row: a
    user's rating of it that was drawn as the held-out test or validation positive stays in
    eval / validation, the user's other ratings of it are dropped (so it never appears in a
    history either), and training negatives are drawn from the other movies. Eval negatives
    are drawn from the whole catalogue, new movies included. With the default 0 every draw is
    that of the protocol above.

Files written under DIR
  ``impressions/train/impressions.csv``, ``impressions/eval/impressions.csv``: header
  ``DEFAULT_SPEC.raw_columns``; the pre-split layout, used by ExampleGen as its train / eval splits
  as they are (no hash split). Training rows are shuffled; eval rows are grouped by user.
  ``validation/impressions.csv``: the validation rows, same format, outside ``impressions/`` so
  ExampleGen ignores them (for model selection by hand; the pipeline trains a fixed number of
  steps and selects nothing on its eval split).
  ``ads/ads.csv``: ad_id, category_id, brand_id, title_words, image (absolute poster path).
  ``summary.json``: the config, counts (users, movies, rows / positives / negatives per split,
  cold movies in eval, missing posters) and the source path.

Feature mapping: the project's columns (``spec/features.py``, ``DEFAULT_SPEC``) and a behaviour
sequence, declared in the ``spec.yaml`` the conversion writes beside the data (`MOVIELENS_SPEC`;
`pipeline run` reads it from the data folder)
  user_id            ``u<UserID>``
  user_city          ``zip<first zip digit>_<gender>``, e.g. ``zip9_F``: the zip prefix with the
                     gender folded in (the schema has no gender column; 10 x 2 values)
  user_age           the ML-1M age code (1, 18, 25, 35, 45, 50, 56)
  ad_id              ``m<MovieID>``
  category_id        1..18, the index of the first-listed genre in `GENRES` (README order)
  brand_id           the release decade from the title, e.g. ``d1990``
  hour, weekday      0: this copy has no timestamps (no ratings.dat), so no context
  query_words        the constant token ``noquery`` (there is no search context; the curated schema
                     requires a value in every row: an empty CSV field is a missing feature, which
                     ExampleValidator rejects)
  title_words        the title without the year, ASCII-folded, lowercased, apostrophes dropped,
                     alphanumeric words (the schema keeps the first 6)
  clicked_categories up to 5 category ids, the most frequent first genres among the user's
                     TRAINING positives (ties: lower id first); held-out movies never count.
                     The same for all the user's rows.
  clicked_ads        a sequence: up to 50 of the user's TRAINING positives (``m<MovieID>``) in a
                     random order fixed per user (no recency: this split is not by time); a
                     training positive's own movie is left out of its row's list (its label must
                     not be in its input).
  clicked_genres     a sequence aligned with clicked_ads: each of those movies' category_id; the
                     model reads it against the candidate's category_id (``against`` in the spec)
  Occupation (0-20) is dropped: no schema column fits it and folding it into user_city would
  leave ~420 values for a few hundred users.

Missing posters: 7 rated movies (1107, 1142, 1421, 1423, 2258, 3027, 3935) have no poster file.
They still get their image path; run the pipeline with ``--on-bad-image blank`` so AdCatalogGen
gives them the grey fallback image (``image_ok=0``). ``posters/3575.jpg`` is really a PNG and one
poster is grayscale: AdCatalogGen opens images by content (PIL) and converts to RGB.

Cold movies: ``summary.json`` counts eval rows whose movie has fewer than 5 TRAINING POSITIVES
(the paper's definition). Run the pipeline with ``--cold-by positives`` so that its
``ad_is_cold`` slice counts the same; by default it counts training ROWS (right for impression
logs), and with uniformly sampled negatives (~20 rows per movie at the defaults) hardly any
movie is cold by that count. ``summary.json`` gives both counts.

Size: ``--users`` defaults to 500 random users (of 6,040): ~153k training rows and 10.5k eval
rows, converted in ~3 s; one ``pipeline run`` with ``--train-steps 600`` then takes 3 to 5
minutes on 2 cores (light backbone, 32x32; 181 to 301 s per cell in the 3-seed ablation of
docs/results.md). ``--users 0`` converts all 6,040 users (2.0 M training rows) in ~16 s.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import time
import unicodedata
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from spec.features import COLD_THRESHOLD, DEFAULT_SPEC, EMPTY_LIST, SEQUENCE, Feature
from spec.files import DATA_SPEC_FILE, dump

GENRES: Tuple[str, ...] = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
    "Western")
CATEGORY_OF_GENRE: Dict[str, int] = {g: i + 1 for i, g in enumerate(GENRES)}
DEFAULT_USERS = 500
MIN_RATINGS_FOR_HOLDOUT = 3      # one validation + one test + at least one training positive
CLICKED_CATEGORIES = 5
COLD_POSITIVES = COLD_THRESHOLD  # cold: fewer than 5 training positives (paper 4.2)
SOURCE_FILES = ("ratings.csv", "movies.dat", "users.dat", "posters")
ADS_COLUMNS = ("ad_id", "category_id", "brand_id", "title_words", "image")
TRAIN_CSV = os.path.join("impressions", "train", "impressions.csv")
EVAL_CSV = os.path.join("impressions", "eval", "impressions.csv")
VALIDATION_CSV = os.path.join("validation", "impressions.csv")
NO_QUERY = "noquery"             # query_words of every row (no search context; never empty)
NO_TITLE = "untitled"            # title_words of a title without any alphanumeric word
_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")


UNIFORM, POPULARITY = "uniform", "popularity"
NEGATIVE_SAMPLING = (UNIFORM, POPULARITY)   # training negatives: uniform over the catalogue, or
                                            # in proportion to 1 + the movie's training positives


class SourceError(ValueError):
  """The source folder is not a usable MovieLens-1M posters copy."""


@dataclasses.dataclass(frozen=True)
class MovieLensConfig:
  users: int = DEFAULT_USERS      # users converted, a random subset; 0 = all
  negatives: int = 4              # K: sampled negatives per training positive (docs/results.md: 4
                                  # against 1 lifts the pipeline's per-user AUC above the blend's)
  eval_negatives: int = 20        # M: sampled negatives per held-out (test / validation) positive
  seed: int = 0
  train_negatives: str = UNIFORM  # how training negatives are drawn: NEGATIVE_SAMPLING
  new_movies: float = 0.0         # share of the catalogue that is new: no training row at all

  def __post_init__(self):
    if self.users < 0:
      raise ValueError(f"--users must be >= 0 (0 = all), got {self.users}")
    if self.negatives < 0:
      raise ValueError(f"--negatives must be >= 0, got {self.negatives}")
    if self.train_negatives not in NEGATIVE_SAMPLING:
      raise ValueError(f"--train-negatives must be one of {', '.join(NEGATIVE_SAMPLING)}, got {self.train_negatives!r}")
    if self.eval_negatives < 1:
      raise ValueError(f"--eval-negatives must be >= 1 (a per-user AUC needs negatives), got {self.eval_negatives}")
    if not 0.0 <= self.new_movies < 1.0:
      raise ValueError(f"--new-movies must be a share in [0, 1), got {self.new_movies}")


# ---- reading the source ---------------------------------------------------------------------

def check_source(source: str) -> None:
  """Raises SourceError naming the first missing file of the source folder."""
  if not os.path.isdir(source):
    raise SourceError(f"--source {source} is not a folder (expected the MovieLens-1M posters copy "
                      f"with {', '.join(SOURCE_FILES)})")
  for name in SOURCE_FILES:
    path = os.path.join(source, name)
    if not os.path.exists(path):
      raise SourceError(f"{path} does not exist: --source must be the MovieLens-1M posters folder "
                        f"with {', '.join(SOURCE_FILES)}")


def read_ratings(path: str) -> Tuple[np.ndarray, np.ndarray]:
  """(user ids, movie ids), int64, one entry per rating (the rating value is not used)."""
  import pandas as pd  # pylint: disable=import-outside-toplevel
  with open(path) as f:
    header = f.readline().strip().split(",")
  missing = [c for c in ("user_id", "movie_id") if c not in header]
  if missing:
    raise SourceError(f"{path}: missing column(s) {missing}; header is {header}")
  try:
    df = pd.read_csv(path, usecols=["user_id", "movie_id"], dtype={"user_id": np.int64, "movie_id": np.int64})
  except ValueError as e:
    raise SourceError(f"{path}: {e}") from None
  return df["user_id"].to_numpy(), df["movie_id"].to_numpy()


def _dat_lines(path: str, fields: int):
  with open(path, encoding="iso-8859-1") as f:
    for line_no, line in enumerate(f, start=1):
      line = line.rstrip("\r\n")
      if not line:
        continue
      parts = line.split("::")
      if len(parts) != fields:
        raise SourceError(f"{path}:{line_no}: expected {fields} '::'-separated fields, got {line!r}")
      yield line_no, parts


def title_words(title: str) -> str:
  """``"American President, The (1995)"`` -> ``"american president the"``; ``"She's"`` -> ``"shes"``,
  ``"Misérables"`` -> ``"miserables"``."""
  title = _YEAR.sub("", title)
  ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
  return " ".join(re.findall(r"[a-z0-9]+", ascii_title.lower().replace("'", "")))


def decade(title: str) -> str:
  """``"Toy Story (1995)"`` -> ``"d1990"``; ``"d0"`` for a title without a year."""
  m = _YEAR.search(title)
  return f"d{int(m.group(1)) // 10 * 10}" if m else "d0"


def read_movies(path: str) -> Dict[int, Tuple[int, str, str]]:
  """MovieID -> (category_id of the first genre, brand_id = decade, title words)."""
  movies = {}
  for line_no, (mid, title, genres) in _dat_lines(path, 3):
    first = genres.split("|")[0]
    if first not in CATEGORY_OF_GENRE:
      raise SourceError(f"{path}:{line_no}: unknown genre {first!r} (known: {', '.join(GENRES)})")
    movies[int(mid)] = (CATEGORY_OF_GENRE[first], decade(title), title_words(title) or NO_TITLE)
  return movies


def read_users(path: str) -> Dict[int, Tuple[str, int]]:
  """UserID -> (user_city = ``zip<first digit>_<gender>``, age code)."""
  users = {}
  for line_no, (uid, gender, age, _occupation, zip_code) in _dat_lines(path, 5):
    prefix = zip_code[:1] if zip_code[:1].isdigit() else "x"
    try:
      users[int(uid)] = (f"zip{prefix}_{gender}", int(age))
    except ValueError:
      raise SourceError(f"{path}:{line_no}: user id and age must be integers") from None
  return users


# ---- the split ------------------------------------------------------------------------------

@dataclasses.dataclass
class _Rows:
  """Impression rows of one split as parallel arrays (user index, movie index, label)."""
  user: List[np.ndarray] = dataclasses.field(default_factory=list)
  movie: List[np.ndarray] = dataclasses.field(default_factory=list)
  label: List[np.ndarray] = dataclasses.field(default_factory=list)

  def add(self, u: int, movies: np.ndarray, label: int):
    self.user.append(np.full(len(movies), u, np.int64))
    self.movie.append(np.asarray(movies, np.int64))
    self.label.append(np.full(len(movies), label, np.int64))

  def arrays(self):
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64)  # noqa: E731
    return cat(self.user), cat(self.movie), cat(self.label)


def split_user(items: np.ndarray, n_movies: int, cfg: MovieLensConfig, user_id: int,
               new: Optional[np.ndarray] = None):
  """One user's split. `items`: indices (into the catalogue) of the movies the user rated;
  `new`: a mask over the catalogue of the new movies (`new_movie_mask`; None: none), which get no training
  row: a held-out rating of one stays held out, the user's other ratings of new movies are
  dropped, and no training negative is drawn from them (eval negatives are).

  Returns dict with ``train``, ``validation``, ``test`` (positive movie indices; the held-out
  ones empty for users with fewer than 3 ratings), ``train_neg``, ``test_neg``,
  ``validation_neg``. Draws, in this order, from ``default_rng([seed, user_id])``; without new
  movies the draws are those of a conversion without the option."""
  rng = np.random.default_rng([cfg.seed, user_id])
  items = np.unique(items)
  empty = np.zeros(0, np.int64)
  if len(items) >= MIN_RATINGS_FOR_HOLDOUT:
    perm = rng.permutation(len(items))
    validation, test, train = items[perm[:1]], items[perm[1:2]], np.sort(items[perm[2:]])
  else:
    validation, test, train = empty, empty, items
  rated = np.zeros(n_movies, bool)
  rated[items] = True
  candidates = np.flatnonzero(~rated)
  train_candidates = candidates
  if new is not None:
    train, train_candidates = train[~new[train]], candidates[~new[candidates]]
  out = {"train": train, "validation": validation, "test": test,
         "train_neg": empty, "test_neg": empty, "validation_neg": empty}
  if len(candidates) == 0:
    return out
  if len(train_candidates):
    out["train_neg"] = rng.choice(train_candidates, size=cfg.negatives * len(train), replace=True)
  m = min(cfg.eval_negatives, len(candidates))
  if len(test):
    out["test_neg"] = np.sort(rng.choice(candidates, size=m, replace=False))
    out["validation_neg"] = np.sort(rng.choice(candidates, size=m, replace=False))
  return out


def popularity_negatives(rated: np.ndarray, k: int, weights: np.ndarray, seed: int, user_id: int) -> np.ndarray:
  """``k`` training negatives for a user, drawn with replacement among the movies the user did not
  rate (``rated``: their indices), each with probability proportional to ``weights`` (1 + its
  training positives over all users), from ``default_rng([seed, user_id, 2])``."""
  p = np.asarray(weights, np.float64).copy()
  p[rated] = 0.0
  if k == 0 or p.sum() == 0:
    return np.zeros(0, np.int64)
  return np.random.default_rng([seed, user_id, 2]).choice(len(p), size=k, replace=True, p=p / p.sum())


def new_movie_mask(n_movies: int, share: float, seed: int) -> np.ndarray:
  """The new movies: ``round(share * n_movies)`` of the catalogue, drawn without replacement from
  ``default_rng([seed, 3])`` (independent of the user subset)."""
  mask = np.zeros(n_movies, bool)
  mask[np.random.default_rng([seed, 3]).choice(n_movies, size=int(round(share * n_movies)), replace=False)] = True
  return mask


HISTORY_LEN = 50
MOVIELENS_SPEC = dataclasses.replace(DEFAULT_SPEC, features=DEFAULT_SPEC.features + (
    Feature("clicked_ads", SEQUENCE, str, max_len=HISTORY_LEN,
            description="the user's other training positives (movies), a random order fixed per user"),
    Feature("clicked_genres", SEQUENCE, str, max_len=HISTORY_LEN, against="category_id",
            description="the first genres (category ids) of clicked_ads, in the same order"),))


def clicked_ads(train: np.ndarray, length: int, seed: int, user_id: int) -> np.ndarray:
  """The user's history of clicked ads: `length` + 1 of their training positives (movie indices)
  in a random order drawn from their own stream, so that no other draw of the conversion
  changes. A row uses the first `length`, without its own movie (`history_string`)."""
  rng = np.random.default_rng([seed, user_id, 1])
  return rng.permutation(train)[:length + 1]


def history_string(history: np.ndarray, own: Optional[int], length: int, names: np.ndarray) -> str:
  """A row's ``clicked_ads``: `history` without the row's own movie `own` (None: keep all),
  cut to `length`; ``EMPTY_LIST`` when nothing is left."""
  kept = [m for m in history.tolist() if m != own][:length]
  return " ".join(names[kept].tolist()) if kept else EMPTY_LIST


def clicked_categories(categories: np.ndarray) -> str:
  """Up to 5 category ids, most frequent first (ties: lower id first), space-separated."""
  counts = np.bincount(categories, minlength=len(GENRES) + 1) if len(categories) else np.zeros(1, int)
  order = sorted((c for c in range(len(counts)) if counts[c] > 0), key=lambda c: (-counts[c], c))
  return " ".join(str(c) for c in order[:CLICKED_CATEGORIES])


# ---- conversion -----------------------------------------------------------------------------

def _check_out_dir(out_dir: str) -> None:
  """The converted data carries MovieLens content (titles, ids): never inside the repository
  unless in a git-ignored top-level folder (``/out/``, ``/demo/``, ... of .gitignore). And no
  flat ``impressions/*.csv`` left in it (a mixed layout the pipeline refuses)."""
  stale = sorted(glob.glob(os.path.join(out_dir, "impressions", "*.csv")))
  if stale:
    raise SourceError(f"--out {out_dir} already holds flat impressions files ({stale[0]}, ...) that would "
                      "mix with the pre-split train/ and eval/ folders: use an empty folder")
  repo = os.path.realpath(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
  out = os.path.realpath(out_dir)
  if not os.path.exists(os.path.join(repo, ".git")) or os.path.commonpath([out, repo]) != repo:
    return
  ignored = set()
  try:
    with open(os.path.join(repo, ".gitignore")) as f:
      for line in f:
        line = line.strip()
        if line.endswith("/") and "*" not in line and not line.startswith("#"):
          ignored.add(line.strip("/"))
  except OSError:
    pass
  rel = os.path.relpath(out, repo)
  if rel == "." or rel.split(os.sep)[0] not in ignored:
    raise SourceError(f"--out {out_dir} is inside the repository {repo} and not in a git-ignored folder "
                      f"({', '.join(sorted(ignored)) or 'none'}): the MovieLens licence forbids "
                      "redistribution, write it outside the repo (e.g. /tmp/ml)")


def _write_csv(path: str, columns: Dict[str, object], header) -> None:
  import pandas as pd  # pylint: disable=import-outside-toplevel
  os.makedirs(os.path.dirname(path), exist_ok=True)
  pd.DataFrame(columns, columns=list(header)).to_csv(path, index=False, lineterminator="\n")


def convert(source: str, out_dir: str, cfg: MovieLensConfig = MovieLensConfig(),
            log: Callable[[str], None] = print) -> Dict[str, object]:
  """Converts the MovieLens-1M posters folder `source` into the project's pre-split format in
  `out_dir` (see the module docstring); returns the summary written to ``summary.json``."""
  t_start = time.time()
  source = os.path.abspath(source)
  check_source(source)
  _check_out_dir(out_dir)

  t0 = time.time()
  r_user, r_movie = read_ratings(os.path.join(source, "ratings.csv"))
  dt = max(time.time() - t0, 1e-9)
  log(f"read {len(r_user):,} ratings in {dt:.1f} s ({len(r_user) / dt:,.0f} rows/s)")
  movies = read_movies(os.path.join(source, "movies.dat"))
  users = read_users(os.path.join(source, "users.dat"))
  log(f"read {len(movies):,} movies and {len(users):,} users")

  # The catalogue: every movie rated by anyone in the source.
  catalog = np.unique(r_movie)
  unknown = sorted(set(catalog.tolist()) - set(movies))
  if unknown:
    raise SourceError(f"{source}/ratings.csv rates movie(s) missing from movies.dat: {unknown[:10]}")
  unknown_users = sorted(set(np.unique(r_user).tolist()) - set(users))
  if unknown_users:
    raise SourceError(f"{source}/ratings.csv has user(s) missing from users.dat: {unknown_users[:10]}")
  m_cat = np.array([movies[m][0] for m in catalog], np.int64)
  m_ad = np.array([f"m{m}" for m in catalog], dtype=object)
  m_brand = np.array([movies[m][1] for m in catalog], dtype=object)
  m_title = np.array([movies[m][2] for m in catalog], dtype=object)
  posters = [os.path.join(source, "posters", f"{m}.jpg") for m in catalog]
  missing_posters = [int(m) for m, p in zip(catalog, posters) if not os.path.exists(p)]

  # Users: all, or a random subset (sorted).
  all_users = np.unique(r_user)
  if cfg.users and cfg.users < len(all_users):
    chosen = np.sort(np.random.default_rng(cfg.seed).choice(all_users, size=cfg.users, replace=False))
  else:
    chosen = all_users
  keep = np.isin(r_user, chosen)
  r_user, r_movie = r_user[keep], np.searchsorted(catalog, r_movie[keep])
  order = np.lexsort((r_movie, r_user))
  r_user, r_movie = r_user[order], r_movie[order]
  starts = np.searchsorted(r_user, chosen)
  ends = np.searchsorted(r_user, chosen, side="right")

  t0 = time.time()
  train, test, validation = _Rows(), _Rows(), _Rows()
  clicked: List[str] = []
  histories: List[np.ndarray] = []
  train_row_count = np.zeros(len(catalog), np.int64)
  without_holdout = 0
  new = new_movie_mask(len(catalog), cfg.new_movies, cfg.seed)
  new_ids = np.flatnonzero(new)
  splits = [split_user(r_movie[a:b], len(catalog), cfg, int(uid), new if len(new_ids) else None)
            for uid, a, b in zip(chosen, starts, ends)]
  train_pos_count = np.bincount(np.concatenate([s["train"] for s in splits] + [np.zeros(0, np.int64)]),
                                minlength=len(catalog))
  if cfg.train_negatives == POPULARITY:
    for uid, s in zip(chosen, splits):
      rated = np.concatenate([s["train"], s["validation"], s["test"], new_ids])
      s["train_neg"] = popularity_negatives(rated, cfg.negatives * len(s["train"]), 1.0 + train_pos_count,
                                            cfg.seed, int(uid))
  for u, (uid, s) in enumerate(zip(chosen, splits)):
    train.add(u, s["train"], 1)
    train.add(u, s["train_neg"], 0)
    np.add.at(train_row_count, s["train"], 1)
    np.add.at(train_row_count, s["train_neg"], 1)
    if len(s["test"]):
      test.add(u, s["test"], 1)
      test.add(u, s["test_neg"], 0)
      validation.add(u, s["validation"], 1)
      validation.add(u, s["validation_neg"], 0)
    else:
      without_holdout += 1
    clicked.append(clicked_categories(m_cat[s["train"]]))
    histories.append(clicked_ads(s["train"], HISTORY_LEN, cfg.seed, int(uid)))
    if (u + 1) % 1000 == 0:
      dt = max(time.time() - t0, 1e-9)
      log(f"  split {u + 1:,} of {len(chosen):,} users ({(u + 1) / dt:,.0f} users/s)")
  dt = max(time.time() - t0, 1e-9)
  log(f"split {len(chosen):,} users in {dt:.1f} s ({len(chosen) / dt:,.0f} users/s)")

  u_id = np.array([f"u{u}" for u in chosen], dtype=object)
  u_city = np.array([users[int(u)][0] for u in chosen], dtype=object)
  u_age = np.array([users[int(u)][1] for u in chosen], np.int64)
  u_clicked = np.array(clicked, dtype=object)
  m_cat_name = np.array([str(c) for c in m_cat.tolist()], dtype=object)

  def columns(rows: _Rows, shuffle_seed: Optional[int] = None, training: bool = False):
    uu, mm, ll = rows.arrays()
    if shuffle_seed is not None:
      perm = np.random.default_rng([cfg.seed, shuffle_seed]).permutation(len(uu))
      uu, mm, ll = uu[perm], mm[perm], ll[perm]
    zeros = np.zeros(len(uu), np.int64)
    own = [m if training and y else None for m, y in zip(mm.tolist(), ll.tolist())]
    history = np.array([history_string(histories[u], o, HISTORY_LEN, m_ad) for u, o in zip(uu.tolist(), own)],
                       dtype=object)
    genres = np.array([history_string(histories[u], o, HISTORY_LEN, m_cat_name) for u, o in zip(uu.tolist(), own)],
                      dtype=object)
    return {"label": ll, "user_id": u_id[uu], "user_city": u_city[uu], "user_age": u_age[uu],
            "ad_id": m_ad[mm], "category_id": m_cat[mm], "brand_id": m_brand[mm], "hour": zeros,
            "weekday": zeros, "query_words": np.full(len(uu), NO_QUERY, dtype=object),
            "title_words": m_title[mm], "clicked_categories": u_clicked[uu], "clicked_ads": history,
            "clicked_genres": genres}, mm, ll

  t0 = time.time()
  os.makedirs(out_dir, exist_ok=True)
  counts = {}
  eval_movies = eval_labels = None
  for name, rows, rel, shuffle in (("train", train, TRAIN_CSV, 1), ("eval", test, EVAL_CSV, None),
                                   ("validation", validation, VALIDATION_CSV, None)):
    cols, mm, ll = columns(rows, shuffle, training=name == "train")
    _write_csv(os.path.join(out_dir, rel), cols, MOVIELENS_SPEC.raw_columns)
    counts[name] = {"rows": int(len(ll)), "positives": int(ll.sum()), "negatives": int(len(ll) - ll.sum())}
    if name == "eval":
      eval_movies, eval_labels = mm, ll
  _write_csv(os.path.join(out_dir, "ads", "ads.csv"),
             {"ad_id": m_ad, "category_id": m_cat, "brand_id": m_brand, "title_words": m_title,
              "image": np.array(posters, dtype=object)}, ADS_COLUMNS)
  dump(MOVIELENS_SPEC, os.path.join(out_dir, DATA_SPEC_FILE),
       header="MovieLens-1M posters, written by `cscnn data movielens` (cscnn/data/movielens.py)")
  n_rows = sum(c["rows"] for c in counts.values())
  dt = max(time.time() - t0, 1e-9)
  log(f"wrote {n_rows:,} impression rows and {len(catalog):,} ads in {dt:.1f} s ({n_rows / dt:,.0f} rows/s)")

  cold = train_pos_count < COLD_POSITIVES
  cold_rows = train_row_count < COLD_THRESHOLD
  pos = eval_labels == 1
  summary = {
      "source": source,
      "config": dataclasses.asdict(cfg),
      "protocol": "implicit feedback; per user 1 validation + 1 test positive held out (users with >= 3 "
                  f"ratings); train: {cfg.negatives} non-interacted movie(s) per positive, sampled "
                  f"{'uniformly' if cfg.train_negatives == UNIFORM else 'by 1 + training positives'}; eval / "
                  f"validation: the held-out positive + {cfg.eval_negatives} sampled non-interacted movies"
                  + (f"; new movies: {len(new_ids)} of the catalogue ({cfg.new_movies:g}) have no training row"
                     if len(new_ids) else ""),
      "users": int(len(chosen)),
      "users_in_source": int(len(all_users)),
      "users_without_holdout": without_holdout,
      "movies": int(len(catalog)),
      "movies_with_train_positives": int((train_pos_count > 0).sum()),
      "rows": {k: v["rows"] for k, v in counts.items()},
      "positives": {k: v["positives"] for k, v in counts.items()},
      "negatives": {k: v["negatives"] for k, v in counts.items()},
      "cold_threshold_train_positives": COLD_POSITIVES,
      "eval_positives_on_cold_movies": int((pos & cold[eval_movies]).sum()),
      "eval_negatives_on_cold_movies": int((~pos & cold[eval_movies]).sum()),
      "cold_movies_in_eval": int(len(np.unique(eval_movies[cold[eval_movies]]))),
      "new_movies": len(new_ids),
      "eval_positives_on_new_movies": int((pos & new[eval_movies]).sum()),
      "eval_negatives_on_new_movies": int((~pos & new[eval_movies]).sum()),
      "eval_rows_cold_by_pipeline_definition": int(cold_rows[eval_movies].sum()),
      "missing_posters": len(missing_posters),
      "missing_poster_movie_ids": missing_posters,
      "context": f"hour = weekday = 0 (no timestamps in this copy), query_words = {NO_QUERY!r}",
      "seconds": round(time.time() - t_start, 1),
  }
  with open(os.path.join(out_dir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1, sort_keys=True)
    f.write("\n")
  log(f"{summary['users']:,} users, {summary['movies']:,} movies ({len(missing_posters)} without poster: "
      f"run the pipeline with --on-bad-image blank); rows train {counts['train']['rows']:,}, eval "
      f"{counts['eval']['rows']:,}, validation {counts['validation']['rows']:,}; eval positives on cold "
      f"movies {summary['eval_positives_on_cold_movies']:,} -> {out_dir} ({summary['seconds']} s)")
  return summary
