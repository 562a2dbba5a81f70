"""Matplotlib helpers shared by the book: each draws arrays onto a given Axes, labels it and returns it.

The functions take data (numpy arrays or lists, e.g. from ``rnnlib.vanishing`` and ``rnnlib.tasks.train``)
and never compute anything expensive themselves.
"""

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes


def plot_log_trajectories(
    ax: Axes,
    trajectories: Mapping[str, Sequence[float]],
    xlabel: str = "step $n$",
    ylabel: str = "magnitude (log scale)",
    title: str | None = None,
) -> Axes:
    """One line per trajectory (label -> values indexed by step), on a log y axis (absolute values)."""
    for label, values in trajectories.items():
        values = np.abs(np.asarray(values, dtype=float))
        ax.plot(np.arange(len(values)), values, label=label)
    return _finish(ax, xlabel, ylabel, title, log=True)


def plot_gradient_norms(
    ax: Axes,
    norms: Mapping[str, Sequence[float]],
    ylabel: str = r"$\|\partial h_T / \partial h_t\|$ (log scale)",
    title: str | None = None,
) -> Axes:
    """Gradient norms against the distance T − t (label -> values indexed by distance), log y axis."""
    return plot_log_trajectories(ax, norms, xlabel="distance $T - t$", ylabel=ylabel, title=title)


def plot_repeated_vs_distinct(ax: Axes, results: Mapping[float, Mapping[str, np.ndarray]]) -> Axes:
    """``rnnlib.vanishing.repeated_vs_distinct`` results by spectral radius ρ: solid lines for one matrix
    repeated, dashed for a different matrix at every step, one colour per ρ; log y axis."""
    for (rho, result), color in zip(results.items(), _colors(len(results)), strict=True):
        ax.plot(result["repeated"], color=color, label=f"ρ = {rho}, one matrix repeated")
        ax.plot(result["distinct"], color=color, linestyle="--", label=f"ρ = {rho}, a new matrix every step")
    xlabel = "steps (recurrent) or layers (feed-forward)"
    return _finish(ax, xlabel, "norm of the vector (log scale)", None, log=True)


def plot_learning_curves(
    ax: Axes,
    curves: Mapping[str, Sequence[float]],
    baseline: float | None = None,
    baseline_label: str = "baseline",
    smooth: int = 1,
    log: bool = True,
    ylabel: str = "training loss",
    title: str | None = None,
) -> Axes:
    """Loss per training step (label -> losses), each smoothed by a moving average over ``smooth`` steps;
    ``baseline`` draws a dashed horizontal line (e.g. ``rnnlib.tasks.ADDING_BASELINE_MSE``)."""
    if smooth < 1:
        raise ValueError(f"smooth must be a window of at least 1 step, got {smooth}")
    for label, losses in curves.items():
        losses = np.asarray(losses, dtype=float)
        if len(losses) < smooth:
            raise ValueError(f"curve {label!r} has {len(losses)} steps, fewer than smooth={smooth}")
        averaged = np.convolve(losses, np.ones(smooth) / smooth, mode="valid")
        ax.plot(np.arange(smooth, len(losses) + 1), averaged, label=label)  # x: the window's last step
    if baseline is not None:
        ax.axhline(baseline, color="k", linestyle="--", linewidth=1, label=baseline_label)
    return _finish(ax, "training step", ylabel + (" (log scale)" if log else ""), title, log)


def _colors(n: int) -> list[str]:
    return [f"C{i % 10}" for i in range(n)]


def _finish(ax: Axes, xlabel: str, ylabel: str, title: str | None, log: bool) -> Axes:
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return ax
