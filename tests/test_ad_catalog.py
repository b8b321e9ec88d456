"""AdCatalogGen's reading and validation of the ad catalogue."""

import io

import numpy as np
import pytest
from PIL import Image

from components.ad_catalog import CatalogError, read_catalog


def _png(colour=(200, 10, 10), size=40):
  buf = io.BytesIO()
  Image.new("RGB", (size, size), colour).save(buf, format="PNG")
  return buf.getvalue()


def _catalog(tmp_path, images, extra_rows=""):
  (tmp_path / "images").mkdir(exist_ok=True)
  lines = ["ad_id,category_id,brand_id,title_words,image"]
  for ad, content in images.items():
    if content is not None:
      (tmp_path / "images" / f"{ad}.png").write_bytes(content)
    lines.append(f"{ad},1,b,t,images/{ad}.png")
  (tmp_path / "ads.csv").write_text("\n".join(lines) + "\n" + extra_rows)
  return str(tmp_path / "ads.csv")


def test_reads_and_resizes(tmp_path):
  path = _catalog(tmp_path, {"a1": _png(), "a2": _png((0, 0, 255), 16)})
  rows = list(read_catalog(path, str(tmp_path), image_size=8))
  assert [(r[0], r[1], r[3]) for r in rows] == [("a1", 1, 1), ("a2", 1, 1)]
  img = np.asarray(Image.open(io.BytesIO(rows[1][2])))
  assert img.shape == (8, 8, 3) and tuple(img[0, 0]) == (0, 0, 255)


def test_a_portrait_image_is_padded_not_squashed(tmp_path):
  buf = io.BytesIO()
  Image.new("RGB", (20, 40), (0, 0, 255)).save(buf, format="PNG")       # 1:2, like a poster
  (row,) = read_catalog(_catalog(tmp_path, {"p": buf.getvalue()}), str(tmp_path), image_size=8)
  img = np.asarray(Image.open(io.BytesIO(row[2]))).astype(int)
  # 20 x 40 fits into 8 x 8 as 4 x 8, centred: columns 0-1 and 6-7 are the grey border
  assert np.all(img[:, :2] == 128) and np.all(img[:, 6:] == 128)
  assert np.all(img[:, 2:6] == (0, 0, 255))


@pytest.mark.parametrize("content, reason", [
    (None, "does not exist"), (b"", "is empty"), (b"not a png at all", "cannot be decoded")])
def test_bad_image_names_the_ad(tmp_path, content, reason):
  path = _catalog(tmp_path, {"good": _png(), "bad_ad": content})
  with pytest.raises(CatalogError, match=rf"ads.csv:3: ad 'bad_ad': image file .*bad_ad.png {reason}"):
    list(read_catalog(path, str(tmp_path), image_size=8))


def test_blank_fallback_is_flagged(tmp_path):
  path = _catalog(tmp_path, {"good": _png(), "bad_ad": b"garbage"})
  rows = list(read_catalog(path, str(tmp_path), image_size=8, on_bad_image="blank", max_blank_share=0.5))
  assert [r[3] for r in rows] == [1, 0]
  assert tuple(np.asarray(Image.open(io.BytesIO(rows[1][2])))[0, 0]) == (128, 128, 128)


def test_blank_fallback_stops_when_most_images_are_missing(tmp_path):
  """A few bad images fall back (1 of 20 = 5%, the default limit); more than the limit stops
  with the count and the first bad ads, as when the image folder is not visible at all."""
  images = {f"a{i:02d}": _png() for i in range(18)}
  path = _catalog(tmp_path, {**images, "gone1": None, "gone2": None})
  with pytest.raises(CatalogError, match=r"2 of 20 ads \(10%\) have no usable image, more than the 5% .*"
                                         r"ads.csv:20: ad 'gone1': image file .*gone1.png does not exist"):
    list(read_catalog(path, str(tmp_path), image_size=8, on_bad_image="blank"))
  assert sum(1 - r[3] for r in read_catalog(path, str(tmp_path), 8, "blank", max_blank_share=0.1)) == 2
  path = _catalog(tmp_path, {**images, "a18": _png(), "gone1": None})
  assert sum(1 - r[3] for r in read_catalog(path, str(tmp_path), image_size=8, on_bad_image="blank")) == 1
  with pytest.raises(CatalogError, match="max_blank_share must be in"):
    list(read_catalog(path, str(tmp_path), image_size=8, on_bad_image="blank", max_blank_share=1.5))


def test_duplicate_ad_and_bad_category(tmp_path):
  path = _catalog(tmp_path, {"a1": _png()}, extra_rows="a1,2,b,t,images/a1.png\n")
  with pytest.raises(CatalogError, match="duplicate ad_id 'a1'"):
    list(read_catalog(path, str(tmp_path), image_size=8))
  path = _catalog(tmp_path, {"a1": _png()}, extra_rows="a2,shoes,b,t,images/a1.png\n")
  with pytest.raises(CatalogError, match="ad 'a2': category_id must be an integer"):
    list(read_catalog(path, str(tmp_path), image_size=8))


def test_missing_column(tmp_path):
  (tmp_path / "ads.csv").write_text("ad_id,category_id\na1,1\n")
  with pytest.raises(CatalogError, match=r"missing required column\(s\) \['image'\]"):
    list(read_catalog(str(tmp_path / "ads.csv"), str(tmp_path), image_size=8))


def test_the_catalogue_artifact_carries_the_title_words(tmp_path):
  import tensorflow as tf
  from components.ad_catalog import read_titles, to_example
  from tfx_pipeline.catalog import TITLE_FEATURE, parse_catalog
  path = _catalog(tmp_path, {"a1": _png()})
  assert read_titles(path) == {"a1": "t"}
  ex = parse_catalog(tf.constant(to_example("a1", 1, _png(), 1, "red shoe")))
  assert ex[TITLE_FEATURE].numpy() == b"red shoe"
  old = tf.train.Example()   # written before titles were stored: parses with an empty title
  old.ParseFromString(to_example("a1", 1, _png(), 1))
  del old.features.feature[TITLE_FEATURE]
  assert parse_catalog(tf.constant(old.SerializeToString()))[TITLE_FEATURE].numpy() == b""
  (tmp_path / "no_titles.csv").write_text("ad_id,category_id,image\na1,1,images/a1.png\n")
  assert read_titles(str(tmp_path / "no_titles.csv")) == {}
