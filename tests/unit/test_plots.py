"""Each chart writes one valid PNG atomically, on ordinal and continuous data, and leaves no figure open."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from imgrade.evaluation.metrics import ordinal_metrics
from imgrade.evaluation.plots import plot_confusion, plot_error_violin, plot_loss_curve, plot_scatter

NAMES = ["2L", "L", "M", "S", "2S", "BL", "BM", "BS", "C"]


@pytest.fixture
def ordinal_data():
    """120 samples over 9 grades: "BS" has no sample, "BM" exactly one, "2L" two with equal errors."""
    rng = np.random.default_rng(0)
    y_true = rng.choice([1, 2, 3, 4, 5, 8], size=117)
    y_true = np.concatenate([y_true, [6, 0, 0]]).astype(np.float32)
    scores = y_true + rng.normal(0.0, 0.5, size=len(y_true))
    scores[-2:] = 0.3  # two "2L" samples with the same error: drawn as points, not a violin
    return y_true, scores


@pytest.fixture
def continuous_data():
    rng = np.random.default_rng(1)
    y_true = rng.gamma(4.0, 50.0, size=80)
    return y_true, 0.9 * y_true + rng.normal(0.0, 20.0, size=80)


def _assert_png(path, min_side=300):
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert min_side <= width <= 4000 and min_side <= height <= 4000, image.size
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == [], "temporary file left behind"
    assert plt.get_fignums() == []


def test_scatter_ordinal(tmp_path, ordinal_data):
    y_true, scores = ordinal_data
    plot_scatter(y_true, scores, NAMES, tmp_path / "scatter.png")
    _assert_png(tmp_path / "scatter.png")


def test_scatter_ordinal_with_thresholds_and_wide_scores(tmp_path, ordinal_data):
    y_true, scores = ordinal_data
    scores = scores.copy()
    scores[0] = -3.0  # beyond the grade scale: the y range must still cover it
    plot_scatter(y_true, scores, NAMES, tmp_path / "s.png", thresholds=np.arange(8) + 0.4, title="custom")
    _assert_png(tmp_path / "s.png")


def test_scatter_rejects_wrong_number_of_thresholds(tmp_path, ordinal_data):
    y_true, scores = ordinal_data
    with pytest.raises(ValueError, match="needs 8 cut points"):
        plot_scatter(y_true, scores, NAMES, tmp_path / "s.png", thresholds=[0.5, 1.5])
    assert list(tmp_path.iterdir()) == []


def test_scatter_jitter_is_seeded(tmp_path, ordinal_data):
    y_true, scores = ordinal_data
    for name in ("a.png", "b.png"):
        plot_scatter(y_true, scores, NAMES, tmp_path / name, seed=7)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_scatter_continuous(tmp_path, continuous_data):
    plot_scatter(*continuous_data, None, tmp_path / "scatter.png")
    _assert_png(tmp_path / "scatter.png")


def test_violin_ordinal_with_empty_and_single_sample_grades(tmp_path, ordinal_data):
    plot_error_violin(*ordinal_data, NAMES, tmp_path / "violin.png")
    _assert_png(tmp_path / "violin.png")


def test_violin_continuous(tmp_path, continuous_data):
    plot_error_violin(*continuous_data, None, tmp_path / "violin.png")
    _assert_png(tmp_path / "violin.png")


def test_violin_continuous_with_tied_values(tmp_path):
    # Most true values equal: quantile edges coincide and the bins merge instead of failing.
    y_true = np.array([5.0] * 30 + [6.0, 7.0, 8.0])
    plot_error_violin(y_true, y_true + np.linspace(-1, 1, len(y_true)), None, tmp_path / "violin.png")
    _assert_png(tmp_path / "violin.png")


def test_confusion(tmp_path, ordinal_data):
    metrics = ordinal_metrics(*ordinal_data, NAMES)
    plot_confusion(metrics["confusion"], NAMES, tmp_path / "confusion.png")
    _assert_png(tmp_path / "confusion.png")


def test_confusion_colours_reach_the_darkest_blue_at_the_largest_share(tmp_path):
    """No row is graded all right (largest share 0.6), yet the best cells take the scale's top colour."""
    from matplotlib import colormaps

    confusion = np.array([[6, 4, 0], [3, 6, 1], [0, 4, 6]])
    plot_confusion(confusion, ["S", "M", "L"], tmp_path / "confusion.png")
    with Image.open(tmp_path / "confusion.png") as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    darkest = np.round(np.array(colormaps["Blues"](1.0)[:3]) * 255)
    palest_cell = np.round(np.array(colormaps["Blues"](0.0)[:3]) * 255)  # the zero cells
    assert np.sum(np.all(np.abs(pixels - darkest) <= 1, axis=1)) > 3 * 1000, "the diagonal is not the darkest blue"
    assert np.sum(np.all(np.abs(pixels - palest_cell) <= 1, axis=1)) > 2 * 1000


def test_confusion_rejects_a_matrix_of_another_size(tmp_path):
    with pytest.raises(ValueError, match="must be 9x9"):
        plot_confusion(np.eye(3, dtype=int), NAMES, tmp_path / "confusion.png")
    assert list(tmp_path.iterdir()) == []


def _history(epochs, lr_steps=True, with_mae=True):
    rows = []
    for epoch in range(1, epochs + 1):
        decay = 3.0 * np.exp(-epoch / 4)
        row = {"epoch": epoch, "train_loss": decay + 0.05, "val_loss": decay + 0.2}
        if with_mae:
            row["val_mae"] = 1.0 / epoch + 0.3
        row["lr"] = 1e-3 if (not lr_steps or epoch <= epochs // 2) else 1e-4
        rows.append(row)
    return rows


@pytest.mark.parametrize(
    "history",
    [
        _history(25),
        _history(4, lr_steps=False, with_mae=False),
        [{"epoch": 1, "train_loss": 0.9, "val_loss": 1.1}],
        [{"epoch": 1, "train_loss": 0.9, "val_loss": None}, {"epoch": 2, "train_loss": 0.7, "val_loss": None}],
    ],
    ids=["log-scale-lr-step-mae", "short-constant-lr", "one-epoch", "no-validation"],
)
def test_loss_curve(tmp_path, history):
    plot_loss_curve(history, tmp_path / "loss.png")
    _assert_png(tmp_path / "loss.png")


def test_loss_curve_rejects_empty_history(tmp_path):
    with pytest.raises(ValueError, match="history is empty"):
        plot_loss_curve([], tmp_path / "loss.png")


def test_plot_replaces_an_existing_file(tmp_path, continuous_data):
    path = tmp_path / "scatter.png"
    path.write_bytes(b"old")
    plot_scatter(*continuous_data, None, path)
    _assert_png(path)


def test_loss_curve_shades_the_frozen_epochs(tmp_path):
    """With --freeze-backbone-epochs the first epochs get a grey band (0.5 grey at 15% on white: 236)."""

    def band_pixels(path):
        pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
        return int((np.abs(pixels - 236) <= 1).all(axis=2).sum())

    history = _history(12)
    plot_loss_curve(history, tmp_path / "plain.png")
    plot_loss_curve(history, tmp_path / "frozen.png", frozen_epochs=4)
    plot_loss_curve(history, tmp_path / "all.png", frozen_epochs=40)  # more than were run: the whole run
    _assert_png(tmp_path / "frozen.png")
    plain, frozen, everything = (band_pixels(tmp_path / f"{n}.png") for n in ("plain", "frozen", "all"))
    # the grid lines have that grey too; the band adds a few hundred thousand pixels at this size
    assert frozen - plain > 50_000 and everything - frozen > 50_000
