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


def _cell_texts(svg) -> list:
    """[(text, white?)] of the 7-point texts (the cell annotations) in an SVG, document order."""
    import xml.etree.ElementTree as ET
    root = ET.parse(svg).getroot()
    return [(t.text, "fill: #ffffff" in t.get("style")) for t in root.iterfind(".//{*}text")
            if "font-size: 7px" in t.get("style")]


def test_heatmap_cells_are_svg_text_and_png_has_the_figure_size(tmp_path):
    from matplotlib.image import imread
    M = [[1.0, 0.25], [-0.5, np.nan]]
    png, svg = plots.plot_heatmap(M, ["a", "b"], tmp_path / "hm", title="t")
    # 2 classes: the smallest figure, 5 x 4 inches at 110 dpi
    assert imread(png).shape == (440, 550, 4)
    # as text, not glyph paths (editable); white only where |v| > 0.6 of the scale
    assert _cell_texts(svg) == [("1.00", True), ("0.25", False), ("-0.50", False), ("–", False)]
    assert "<use xlink:href=\"#DejaVuSans" not in svg.read_text()


def test_confusion_counts_are_svg_text(tmp_path):
    from matplotlib.image import imread
    png, svg = plots.plot_confusion([[3, 1], [0, 4]], ["a", "b"], tmp_path / "cf", title="t")
    assert imread(png).shape == (440, 550, 4)
    # row fractions 0.75 0.25 / 0 1: white above 0.6
    assert _cell_texts(svg) == [("3", True), ("1", False), ("0", False), ("4", True)]


def test_annotating_after_the_layout_draws_the_same_png(tmp_path):
    """Reference: the texts added first and the layout left to matplotlib's savefig."""
    import matplotlib.pyplot as plt
    from matplotlib.image import imread
    M = np.random.default_rng(1).uniform(-1, 1, (3, 3))
    texts = [[f"{v:.2f}" for v in row] for row in M]
    pngs = []
    for helper in (False, True):
        fig, ax = plt.subplots(figsize=(5, 4), layout="constrained")
        im = ax.imshow(M, vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_xticks(range(3), ["one", "two", "three"], rotation=45, ha="right")
        if not helper:
            for (i, j), txt in np.ndenumerate(np.asarray(texts)):
                ax.text(j, i, txt, ha="center", va="center", fontsize=7, in_layout=False,
                        color="white" if abs(M[i, j]) > 0.6 else "black")
        fig.colorbar(im, ax=ax, label="c")
        ax.set_title("title")
        if helper:
            plots.annotate_cells(ax, texts, white=np.abs(M) > 0.6)
            pngs.append(plots.save(fig, tmp_path / "new")[0])
        else:
            fig.savefig(tmp_path / "ref.png", dpi=plots.DPI)
            plt.close(fig)
            pngs.append(tmp_path / "ref.png")
    ref, new = (imread(p) for p in pngs)
    assert ref.shape == new.shape and np.abs(ref - new).max() == 0
