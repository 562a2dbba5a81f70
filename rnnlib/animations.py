"""Animations that play in the static HTML book: matplotlib's ``FuncAnimation.to_jshtml`` embeds every
frame as an image with its own play/pause controls, so no kernel is needed. Each function takes the numbers
a page computed and returns an ``Animation``, which Jupyter shows as that HTML and, where HTML cannot be
used (the PDF book), as a PNG of the last frame.
"""

import io
import re
from collections.abc import Mapping

import numpy as np
from matplotlib.animation import FuncAnimation
from matplotlib.figure import Figure

from rnnlib.diagrams import DIM, HIGHLIGHT, INK, draw_lstm_cell

# (highlighted groups, equation with the page's numbers) for each stage of one LSTM step, in the cell's order
LSTM_STAGES = (
    ((), "inputs: $h_{{t-1}}$ = {h_prev},  $c_{{t-1}}$ = {c_prev},  $x_t$ = {x_t}"),
    (("combine",), "1. combine: $[h_{{t-1}}, x_t]$ = {combined}"),
    (("forget",), r"2. forget gate: $f_t = \sigma(W_f \cdot [h_{{t-1}}, x_t] + b_f)$ = {f_t}"),
    (("input",), r"3. input gate: $i_t = \sigma(W_i \cdot [h_{{t-1}}, x_t] + b_i)$ = {i_t}"),
    (("candidate",), r"4. candidate: $\tilde{{c}}_t = \tanh(W_c \cdot [h_{{t-1}}, x_t] + b_c)$ = {c_tilde}"),
    (("cell",), r"5. cell state: $c_t = f_t \odot c_{{t-1}} + i_t \odot \tilde{{c}}_t$ = {c_t}"),
    (("output",), r"6. output gate: $o_t = \sigma(W_o \cdot [h_{{t-1}}, x_t] + b_o)$ = {o_t}"),
    (("hidden",), r"7. hidden state: $h_t = o_t \odot \tanh(c_t)$ = {h_t}"),
)


class Animation:
    """An animation rendered once: ``html`` (``to_jshtml``, every frame embedded) and ``png`` (last frame)."""

    def __init__(self, animation: FuncAnimation, figure: Figure) -> None:
        html = animation.to_jshtml(default_mode="once")  # draws every frame, ending on the last
        # The controls' icons come from Font Awesome, which to_jshtml links from a CDN; the book works offline
        # and its theme already loads Font Awesome, so the link goes.
        self.html = re.sub(r'<link rel="stylesheet"\s+href="https://[^"]*font-awesome[^"]*">', "", html)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        self.png = buffer.getvalue()

    def _repr_html_(self) -> str:
        return self.html

    def _repr_png_(self) -> bytes:
        return self.png


def _vector(v: np.ndarray) -> str:
    return "[" + ", ".join(f"{x:+.2f}" for x in np.ravel(v)) + "]"


def lstm_step(values: Mapping[str, np.ndarray], interval_ms: int = 1500) -> Animation:
    """One LSTM step, stage by stage: the cell with the active path in red and, below it, the stage's
    equation with the page's numbers. ``values`` holds h_prev, c_prev, x_t, f_t, i_t, c_tilde, c_t, o_t,
    h_t (one sequence each, any shape that ravels to a vector)."""
    numbers = {name: _vector(v) for name, v in values.items()}
    numbers["combined"] = _vector(np.concatenate([np.ravel(values["h_prev"]), np.ravel(values["x_t"])]))
    fig = Figure(figsize=(9, 5.6))
    cell_ax = fig.add_axes((0, 0.16, 1, 0.84))
    text_ax = fig.add_axes((0, 0, 1, 0.16))

    def draw(frame: int) -> None:
        highlight, equation = LSTM_STAGES[frame]
        cell_ax.clear()
        cell_ax.set_xlim(0, 12)
        cell_ax.set_ylim(0, 6.3)
        cell_ax.set_aspect("equal")
        cell_ax.axis("off")
        draw_lstm_cell(cell_ax, highlight)
        text_ax.clear()
        text_ax.axis("off")
        text_ax.text(0.5, 0.55, equation.format(**numbers), ha="center", va="center", fontsize=12,
                     color=HIGHLIGHT if highlight else INK)
        text_ax.text(0.5, 0.1, f"stage {frame} of {len(LSTM_STAGES) - 1}", ha="center", va="center",
                     fontsize=9, color=DIM)

    return Animation(FuncAnimation(fig, draw, frames=len(LSTM_STAGES), interval=interval_ms), fig)


def plane_trajectory(xs: np.ndarray, eigenvalues: np.ndarray, eigenvectors: np.ndarray,
                     components: np.ndarray, interval_ms: int = 250) -> Animation:
    """x_n = W^n x_0 in the plane, one step per frame: the state (left) moves towards the eigenvector whose
    eigenvalue is above 1 while the size of its components (right, log scale) grows or shrinks as λ^n.
    xs: (n + 1, 2) states; eigenvalues: (2,); eigenvectors: (2, 2), one per column; components: (n + 1, 2)."""
    n_steps = len(xs) - 1
    colors = ["C3" if abs(lam) > 1 else "C0" for lam in eigenvalues]  # red grows, blue shrinks
    fig = Figure(figsize=(10, 4.2), dpi=72)
    left, right = fig.subplots(1, 2)
    reach = np.abs(xs).max() * 1.1
    for lam, q, color in zip(eigenvalues, eigenvectors.T, colors, strict=True):
        left.plot([-reach * q[0], reach * q[0]], [-reach * q[1], reach * q[1]], color=color, lw=1,
                  label=f"eigenvector, λ = {lam:.2f}")
    (path,) = left.plot([], [], "o-", color="k", markersize=3, lw=0.8, label="$x_0, \\dots, x_n$")
    (head,) = left.plot([], [], "o", color="k", markersize=9)
    left.set(xlim=(-reach, reach), ylim=(-reach, reach), aspect="equal", title="the state $x_n = W^n x_0$")
    left.legend(fontsize=8, loc="lower right")
    lines = [right.plot([], [], color=c, label=f"along the eigenvector λ = {lam:.2f}")[0]
             for lam, c in zip(eigenvalues, colors, strict=True)]
    right.set(yscale="log", xlim=(0, n_steps), ylim=(components.min() / 2, components.max() * 2),
              xlabel="step $n$", ylabel="|component| (log scale)")
    right.set_title("its components: $|c_i \\lambda_i^n|$")
    right.legend(fontsize=8, loc="upper left")
    fig.tight_layout()

    def draw(n: int) -> None:
        path.set_data(xs[: n + 1, 0], xs[: n + 1, 1])
        head.set_data(xs[n : n + 1, 0], xs[n : n + 1, 1])
        for i, line in enumerate(lines):
            line.set_data(np.arange(n + 1), components[: n + 1, i])
        fig.suptitle(f"n = {n}", x=0.02, ha="left", fontsize=11)

    return Animation(FuncAnimation(fig, draw, frames=n_steps + 1, interval=interval_ms), fig)
