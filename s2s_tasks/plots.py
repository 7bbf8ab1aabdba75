"""PNG rendering of attention heatmaps and training curves (matplotlib's Agg renderer).

Only rendering lives here: no torch, no Lightning. matplotlib is imported inside the functions,
so that importing this module (and ``s2s-tasks --help``) stays fast. Figures are drawn with
``matplotlib.figure.Figure`` on an Agg canvas, never through ``pyplot``: no global state, no
window, safe in any process.

Every figure has an exact size in pixels (``DPI`` dots per inch, size in inches = pixels / DPI):
:func:`heatmap_size` and :func:`curves_size` give the defaults, and ``size=(width, height)``
sets them.
"""

from __future__ import annotations

import csv
import math
import textwrap
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

#: dots per inch of every figure (pixel sizes are exact: figure inches = pixels / DPI)
DPI = 100
#: pixels per source/target token of a heatmap of default size, and the size bounds
HEATMAP_CELL_PX = 22
HEATMAP_MIN_PX = (400, 300)
HEATMAP_MAX_PX = (2400, 2400)
#: longest token label drawn in full (longer ones are cut with an ellipsis)
MAX_LABEL_CHARS = 20
#: pixels of one panel of the training curves, and the panels per row
CURVES_PANEL_PX = (420, 300)
CURVES_COLUMNS = 3

PathLike = Union[str, Path]


def _plain(text: str) -> str:
    """Text shown as it is: matplotlib would read ``$...$`` in a token as mathtext."""
    return str(text).replace("$", r"\$")


def _token_labels(tokens: Sequence[str]) -> List[str]:
    return [_plain(t if len(t) <= MAX_LABEL_CHARS else t[: MAX_LABEL_CHARS - 1] + "\u2026") for t in tokens]


def _label_px(labels: Sequence[str]) -> int:
    """About the length in pixels of the longest tick label (8 pt at ``DPI``)."""
    return 6 + math.ceil(6.5 * max((len(label) for label in labels), default=1))


def _heatmap_margins(source_labels: Sequence[str], target_labels: Sequence[str], title_lines: int) -> Tuple[int, int, int, int]:
    """(left, right, top, bottom) pixels around the heatmap's cells: tick labels and axis names,
    the colour bar, the title."""
    return 34 + _label_px(target_labels), 70, 12 + 13 * title_lines, 34 + _label_px(source_labels)


def heatmap_size(source_tokens: Sequence[str], target_tokens: Sequence[str]) -> Tuple[int, int]:
    """Default ``(width, height)`` in pixels of :func:`attention_heatmap`: ``HEATMAP_CELL_PX`` per
    token plus room for the labels (from the longest token of each axis, up to
    ``MAX_LABEL_CHARS``), colour bar and a two-line title, clipped to
    ``[HEATMAP_MIN_PX, HEATMAP_MAX_PX]``."""
    left, right, top, bottom = _heatmap_margins(_token_labels(source_tokens), _token_labels(target_tokens), 2)
    width = left + right + HEATMAP_CELL_PX * len(source_tokens)
    height = top + bottom + HEATMAP_CELL_PX * len(target_tokens)
    return (min(max(width, HEATMAP_MIN_PX[0]), HEATMAP_MAX_PX[0]), min(max(height, HEATMAP_MIN_PX[1]), HEATMAP_MAX_PX[1]))


def curves_size(num_panels: int, panel_size: Tuple[int, int] = CURVES_PANEL_PX) -> Tuple[int, int]:
    """Default ``(width, height)`` in pixels of :func:`training_curves` with ``num_panels``
    panels: ``min(num_panels, CURVES_COLUMNS)`` panels per row, ``panel_size`` each."""
    columns = max(1, min(num_panels, CURVES_COLUMNS))
    rows = max(1, math.ceil(num_panels / columns))
    return columns * panel_size[0], rows * panel_size[1]


def _new_figure(size: Tuple[int, int], constrained: bool = True):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width, height = size
    if width < 50 or height < 50:
        raise ValueError(f"a figure must be at least 50 x 50 pixels, got {width} x {height}")
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained" if constrained else None)
    FigureCanvasAgg(figure)
    return figure


def _finish(figure, path: Optional[PathLike]) -> np.ndarray:
    """Draw ``figure``, write it to ``path`` as PNG (when given) and return its pixels ``(H, W, 3)`` uint8."""
    from matplotlib.image import imsave

    with warnings.catch_warnings():
        # tokens of scripts the default font lacks are drawn as boxes: not worth a warning each
        warnings.filterwarnings("ignore", message="Glyph .* missing from", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*constrained_layout not applied.*", category=UserWarning)
        figure.canvas.draw()
    image = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        imsave(str(path), image, format="png")
    return image


def _tick_step(count: int, pixels: float, min_px: float = 9.0) -> int:
    """Label every ``step``-th of ``count`` ticks so that labels are at least ``min_px`` apart."""
    return max(1, math.ceil(count * min_px / max(pixels, 1.0)))


def attention_heatmap(
    weights: Any,
    source_tokens: Sequence[str],
    target_tokens: Sequence[str],
    path: Optional[PathLike] = None,
    title: str = "attention",
    size: Optional[Tuple[int, int]] = None,
) -> np.ndarray:
    """Render attention weights as a heatmap: source tokens on the x axis, target tokens on the y
    axis (row ``t`` is the attention while the decoder produced ``target_tokens[t]``).

    Args:
        weights: ``(T, S)`` tensor or array, ``T = len(target_tokens)``, ``S = len(source_tokens)``.
        path: where to write the PNG (folders are created); ``None`` renders only.
        size: ``(width, height)`` in pixels; default :func:`heatmap_size`.

    Returns:
        The image as ``(height, width, 3)`` uint8 RGB pixels (for TensorBoard).
    """
    if hasattr(weights, "detach"):
        weights = weights.detach().float().cpu().numpy()
    values = np.asarray(weights, dtype=np.float32)
    if values.ndim != 2 or values.shape != (len(target_tokens), len(source_tokens)):
        raise ValueError(
            f"attention weights of shape {tuple(values.shape)} do not match {len(target_tokens)} target x "
            f"{len(source_tokens)} source tokens"
        )
    width, height = size or heatmap_size(source_tokens, target_tokens)
    source_labels, target_labels = _token_labels(source_tokens), _token_labels(target_tokens)
    title_lines = textwrap.wrap(_plain(title), max(20, (width - 16) // 7)) or [""]
    # a fixed layout from the labels' lengths: a fraction of the cost of matplotlib's constrained
    # layout, which measures every label; labels get at most 40 % of a side
    left, right, top, bottom = _heatmap_margins(source_labels, target_labels, len(title_lines))
    left, bottom = min(left, int(0.4 * width)), min(bottom, int(0.4 * height))
    plot_width, plot_height = max(width - left - right, 10), max(height - top - bottom, 10)
    figure = _new_figure((width, height), constrained=False)
    axes = figure.add_axes((left / width, bottom / height, plot_width / width, plot_height / height))
    colorbar_axes = figure.add_axes(((left + plot_width + 10) / width, bottom / height, 12 / width, plot_height / height))
    top_value = float(values.max()) if values.size else 0.0
    image = axes.imshow(values, aspect="auto", cmap="viridis", vmin=0.0, vmax=top_value if top_value > 0 else 1.0,
                        interpolation="nearest")
    figure.colorbar(image, cax=colorbar_axes)
    colorbar_axes.tick_params(labelsize=8)
    x_step = _tick_step(len(source_tokens), plot_width)
    y_step = _tick_step(len(target_tokens), plot_height)
    axes.set_xticks(range(0, len(source_tokens), x_step))
    axes.set_xticklabels(source_labels[::x_step], rotation=90, fontsize=8)
    axes.set_yticks(range(0, len(target_tokens), y_step))
    axes.set_yticklabels(target_labels[::y_step], fontsize=8)
    axes.set_xlabel("source", fontsize=9)
    axes.set_ylabel("target", fontsize=9)
    figure.suptitle("\n".join(title_lines), fontsize=9, y=1 - 4 / height, va="top")
    return _finish(figure, path)


# ------------------------------------------------------------------------------------- training curves
#: metrics.csv columns that index rows, never plotted
INDEX_COLUMNS = ("epoch", "step")
LOSS_PANEL = "loss"
LR_PANEL = "learning rate"


def metric_panel(name: str) -> Optional[str]:
    """The panel a metrics.csv column is drawn in, or ``None`` for columns not drawn.

    * ``loss``: every ``train/*`` column (``train/loss``, ``train/nll``, per-task losses ...)
      and the validation losses (``val/loss``, ``val/TASK/loss``), so that training and
      validation loss can be compared;
    * ``learning rate``: LearningRateMonitor's ``lr-*`` columns;
    * every other validation metric its own panel, shared with its beam-search twin
      (``val/bleu`` and ``val/beam_bleu``);
    * ``test/*`` metrics (one evaluation, not a curve) and the index columns are not drawn.
    """
    if name in INDEX_COLUMNS or name.startswith("test/"):
        return None
    if name.startswith("train/") or (name.startswith("val/") and name.rsplit("/", 1)[-1] == "loss"):
        return LOSS_PANEL
    if name.startswith("lr-"):
        return LR_PANEL
    head, _, last = name.rpartition("/")
    return f"{head}/{last[len('beam_'):]}" if last.startswith("beam_") else name


def read_metrics_csv(path: PathLike) -> Dict[str, Tuple[List[float], List[float]]]:
    """Lightning CSVLogger's ``metrics.csv`` -> ``{column: (steps, values)}`` for every column
    that has values (rows log a few columns each; the empty cells are skipped)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no metrics file at {file} (written by a CSVLogger in trainer.logger)")
    series: Dict[str, Tuple[List[float], List[float]]] = {}
    with open(file, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "step" not in reader.fieldnames:
            raise ValueError(f"{file} is not a Lightning CSVLogger metrics file (it has no 'step' column)")
        for row in reader:
            try:
                step = float(row["step"])
            except (TypeError, ValueError):
                continue
            for name, cell in row.items():
                if name is None or name in INDEX_COLUMNS or cell in (None, ""):
                    continue
                try:
                    value = float(cell)
                except ValueError:
                    continue
                if math.isfinite(value):
                    steps, values = series.setdefault(name, ([], []))
                    steps.append(step)
                    values.append(value)
    return series


def _panels(series: Dict[str, Tuple[List[float], List[float]]]) -> Dict[str, List[str]]:
    """Panel title -> its columns, in drawing order: loss, learning rate, then the others by name."""
    panels: Dict[str, List[str]] = {}
    for name in sorted(series):
        panel = metric_panel(name)
        if panel is not None:
            panels.setdefault(panel, []).append(name)
    first = [p for p in (LOSS_PANEL, LR_PANEL) if p in panels]
    return {p: panels[p] for p in first + sorted(p for p in panels if p not in first)}


def training_curves(
    metrics_csv: PathLike,
    png_path: PathLike,
    size: Optional[Tuple[int, int]] = None,
    panel_size: Tuple[int, int] = CURVES_PANEL_PX,
    title: Optional[str] = None,
) -> List[str]:
    """Plot a CSVLogger ``metrics.csv`` as one panel per metric family (see :func:`metric_panel`),
    optimizer step on the x axis, and write it to ``png_path``.

    Args:
        size: ``(width, height)`` in pixels; default :func:`curves_size` of the panel count.
        panel_size: pixels per panel for the default size.

    Returns:
        The panel titles, in drawing order.

    Raises:
        FileNotFoundError: no ``metrics_csv``.
        ValueError: it holds nothing to plot.
    """
    series = read_metrics_csv(metrics_csv)
    panels = _panels(series)
    if not panels:
        raise ValueError(f"{metrics_csv} holds no training or validation metrics to plot")
    width, height = size or curves_size(len(panels), panel_size)
    figure = _new_figure((width, height))
    columns = max(1, min(len(panels), CURVES_COLUMNS))
    rows = math.ceil(len(panels) / columns)
    for number, (panel, names) in enumerate(panels.items(), start=1):
        axes = figure.add_subplot(rows, columns, number)
        # identical series (e.g. the learning rates of parameter groups that share one schedule)
        # are drawn once, under all their names
        drawn: Dict[Tuple[Tuple[float, ...], Tuple[float, ...]], List[str]] = {}
        for name in sorted(names, key=lambda n: (n.replace("beam_", ""), "beam_" in n)):
            steps, values = series[name]
            drawn.setdefault((tuple(steps), tuple(values)), []).append(name)
        for (steps, values), labels in drawn.items():
            sparse = len(values) < 50  # validation: a point per evaluation, worth marking
            axes.plot(steps, values, label=_plain(", ".join(labels)), linewidth=1.2, marker="o" if sparse else None,
                      markersize=3)
        axes.set_title(_plain(panel), fontsize=10)
        axes.set_xlabel("step", fontsize=8)
        axes.tick_params(labelsize=7)
        axes.grid(True, alpha=0.3)
        if panel == LR_PANEL:
            axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        if len(drawn) > 1 or panel != names[0]:
            axes.legend(fontsize=7)
    if title:
        figure.suptitle(_plain(title), fontsize=11)
    _finish(figure, png_path)
    return list(panels)
