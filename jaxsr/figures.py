"""The evaluation report's figures, as PNG files of fixed pixel size.

Built on `matplotlib.figure.Figure` with the Agg canvas, never pyplot, so no
display or global state is involved. No `bbox_inches='tight'`: a figure is
exactly figsize x dpi pixels, which the tests check.
- boxplots: SSIM / PSNR / VIF per method (the paper's Fig. 3).
- qualitative panel: the two kept neighbours, the dropped original, each
  method's result and its signed difference (result - original) in 'bwr' with
  limits symmetric about 0 and shared by all methods (the paper's Figs. 2, 4).
- through-plane view: a long-axis cut of one frame, acquired slices (nearest,
  thick) next to each method's upsampling, in millimetres so the aspect ratio
  is physical (slice spacing vs in-plane spacing).
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxsr import stats

DPI = 100
BOXPLOT_PX = (1200, 400)
PANEL_COLUMN_PX = 220
PANEL_HEIGHT_PX = 460
THROUGH_PLANE_PX = (1200, 330)

METHOD_NAMES = {"ae": "Autoencoder", "ae_residual": "AE + residuals", "linear": "Linear", "bspline": "B-spline", "lanczos": "Lanczos"}
METRIC_NAMES = {"ssim": "SSIM", "psnr": "PSNR (dB)", "vif": "VIF"}
METHOD_COLOURS = {"ae": "#d62728", "ae_residual": "#ff7f0e", "linear": "#1f77b4", "bspline": "#2ca02c", "lanczos": "#9467bd"}


def method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def _figure(size_px: tuple[int, int]) -> Figure:
    fig = Figure(figsize=(size_px[0] / DPI, size_px[1] / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike) -> None:
    fig.savefig(path, dpi=DPI, format="png")


def boxplots(values: dict[str, dict[str, np.ndarray]], path: str | os.PathLike, title: str = "") -> None:
    """values[metric][method] -> per-slice scores; one box per method in one panel per metric.

    PSNR is capped as in the statistics (jaxsr.stats.PSNR_CAP_DB), so exact
    reconstructions stay on the plot.
    """
    fig = _figure(BOXPLOT_PX)
    metrics = list(values)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        methods = list(values[metric])
        data = []
        for m in methods:
            v = stats.cap_scores(metric, values[metric][m])
            data.append(v[~np.isnan(v)])
        box = ax.boxplot(data, patch_artist=True, widths=0.6, flierprops={"markersize": 2, "alpha": 0.4},
                         medianprops={"color": "black", "linewidth": 1.5})
        for patch, m in zip(box["boxes"], methods):
            patch.set_facecolor(METHOD_COLOURS.get(m, "#7f7f7f"))
            patch.set_alpha(0.6)
        ax.set_xticks(range(1, len(methods) + 1))
        ax.set_xticklabels([method_name(m) for m in methods])
        ax.set_title(f"{METRIC_NAMES.get(metric, metric)}, higher is better", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def qualitative_size_px(n_methods: int) -> tuple[int, int]:
    return (PANEL_COLUMN_PX * (3 + n_methods), PANEL_HEIGHT_PX)


def _show(ax, image: np.ndarray, title: str, **kwargs):
    # Arrays are (x, y): transpose so x runs left to right and y bottom to top.
    im = ax.imshow(np.asarray(image).T, origin="lower", interpolation="nearest", **kwargs)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def qualitative_panel(example, path: str | os.PathLike, scores: dict[str, dict[str, float]] | None = None) -> None:
    """Top: neighbours, original, each method's result; bottom: each result minus the original.

    `example`: jaxsr.evaluate.QualitativeExample. `scores[method][metric]`
    (optional) is printed under each method's name.
    """
    methods = list(example.results)
    fig = _figure(qualitative_size_px(len(methods)))
    axes = fig.subplots(2, 3 + len(methods), squeeze=False)
    grey = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}
    _show(axes[0, 0], example.left, f"slice {example.slice - 1} (kept)", **grey)
    _show(axes[0, 1], example.right, f"slice {example.slice + 1} (kept)", **grey)
    _show(axes[0, 2], example.truth, f"slice {example.slice} (dropped,\noriginal)", **grey)
    diffs = {m: np.asarray(r, np.float32) - np.asarray(example.truth, np.float32) for m, r in example.results.items()}
    limit = max(max(float(np.abs(d).max()) for d in diffs.values()), 1e-6)
    im = None
    for j, m in enumerate(methods, start=3):
        label = method_name(m)
        if scores and m in scores:
            s = scores[m]
            label += f"\nSSIM {s['ssim']:.3f}, PSNR {min(s['psnr'], stats.PSNR_CAP_DB):.1f} dB"
        _show(axes[0, j], example.results[m], label, **grey)
        im = _show(axes[1, j], diffs[m], f"{method_name(m)} - original", cmap="bwr", vmin=-limit, vmax=limit)
    for j in range(3):
        axes[1, j].axis("off")
    axes[1, 0].text(0.0, 0.5, f"{example.volume}\nframe {example.frame}, slice {example.slice}\n\n"
                    f"difference maps (right):\nresult - original,\nblue < 0 < red, limits ±{limit:.3f}\n"
                    "(intensities in [0, 1])", fontsize=10, va="center", transform=axes[1, 0].transAxes)
    fig.tight_layout()
    if im is not None:
        # In the empty cell left of the first difference map, so no map is shrunk.
        cax = axes[1, 2].inset_axes((0.78, 0.05, 0.08, 0.9))
        fig.colorbar(im, cax=cax)
    _save(fig, path)


def through_plane_extent(positions: np.ndarray, ny: int, dy: float, dz: float) -> tuple[float, float, float, float]:
    """imshow extent (left, right, bottom, top) in mm of a (Z', Y) image whose rows lie at `positions`.

    Each row spans its share of the distance between slice centres (dz times
    the position step), so thick acquired slices show as tall blocks and all
    panels line up in millimetres; z grows downwards.
    """
    positions = np.asarray(positions, float)
    step = (positions[1] - positions[0]) if positions.size > 1 else 1.0
    return (-dy / 2, (ny - 0.5) * dy, (positions[-1] + step / 2) * dz, (positions[0] - step / 2) * dz)


def through_plane_figure(example, path: str | os.PathLike) -> None:
    """Long-axis cut with physical aspect: y (mm) across, z (mm) down; acquired slices drawn thick.

    `example`: jaxsr.evaluate.ThroughPlaneExample.
    """
    panels = [(f"acquired ({example.slice_mm:.3g} mm slices)", example.acquired,
               np.arange(example.acquired.shape[1], dtype=float))]
    for m, image in example.upsampled.items():
        panels.append((f"{method_name(m)}, upsampled ×{example.factor}", image, np.asarray(example.positions, float)))
    fig = _figure(THROUGH_PLANE_PX)
    # The physical aspect fixes the panels' height: constrained layout with the panels anchored at
    # the top keeps them under the title and leaves what height is spare below.
    fig.set_layout_engine("constrained")
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    dy, dz = example.inplane_mm, example.slice_mm
    ny = example.acquired.shape[0]
    for ax, (title, image, positions) in zip(axes, panels):
        ax.imshow(np.asarray(image).T, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest",
                  extent=through_plane_extent(positions, ny, dy, dz), aspect="equal")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("y (mm)")
        ax.set_anchor("N")
    axes[0].set_ylabel("through-plane z (mm)")
    fig.suptitle(f"{example.volume}, frame {example.frame}: long-axis cut at column x = {example.column}, "
                 f"in-plane {dy:.2f} mm, slice spacing {dz:.2f} mm")
    _save(fig, path)
