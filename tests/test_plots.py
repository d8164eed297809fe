"""analysis.plots.save: one layout for both formats, nothing clipped, colorbars intact."""
import re

import numpy as np

from analysis import plots


def test_heatmap_png_and_svg_share_one_layout(tmp_path):
    from matplotlib.image import imread
    classes = ["ballad", "chamber", "electronic", "jazz", "rock"]
    M = np.random.default_rng(0).uniform(-1, 1, (5, 5))
    png, svg = plots.plot_heatmap(M, classes, tmp_path / "hm", title="centroid cosine",
                                  cbar_label="cosine similarity")
    pixels = imread(png)
    assert pixels.shape[0] > 300 and pixels.std() > 0.05
    text = svg.read_text()
    for s in classes + ["centroid cosine", "cosine similarity", "0.27"]:
        assert s in text, s
    # the SVG keeps the PNG's page (the layout solved once, for the first format)
    w, h = (float(v) for v in re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', text).groups())
    png_h, png_w = pixels.shape[:2]
    assert abs(png_w / png_h - w / h) < 0.01
    # the matrix and the colorbar lie side by side inside the page, left to right
    (x1, w1), (x2, w2) = [(float(a), float(b)) for a, b in re.findall(
        r'<image[^>]*?x="([-\d.]+)"[^>]*?width="([\d.]+)"', text, flags=re.S)]
    assert 0 < x1 and x1 + w1 < x2 and x2 + w2 < w and w1 > w / 3
