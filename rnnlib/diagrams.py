"""Diagrams of the book, drawn with matplotlib patches when the book is built (no image files in the repo).

One style for all: sigmoid layers yellow, tanh layers blue, element-wise operations pink circles, states as
black lines with arrows; a highlighted part is red and thick while the rest turns grey. Each function returns
a ``Diagram``: a matplotlib ``Figure`` (made without pyplot) that a notebook shows as SVG in HTML and as PNG
where SVG is not used (the PDF book).
The symbols are the equations': f_t, i_t, c̃_t, c_t, o_t, h_t for the LSTM and r_t, z_t, h̃_t for the GRU.

The LSTM and GRU cells are drawn from a list of parts, each tagged with the groups it belongs to
(``LSTM_GROUPS``, ``GRU_GROUPS``); ``highlight`` names the groups to draw in red, so that each gate's
section can repeat the cell with its own path highlighted.
"""

import io
from collections.abc import Iterable
from dataclasses import dataclass, field

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Ellipse, FancyArrowPatch, FancyBboxPatch, Rectangle

SIGMOID, TANH, OP, CELL, STATE = "#f6d55c", "#9ecae1", "#f4b6c2", "#eef6ea", "#d9ead3"
INK, HIGHLIGHT, DIM = "#222222", "#d62728", "#b0b0b0"
FONT = 13

LSTM_GROUPS = ("combine", "forget", "input", "candidate", "cell", "output", "hidden")
GRU_GROUPS = ("combine", "reset", "update", "candidate", "mix")


class Diagram:
    """A figure that Jupyter shows as SVG (sharp at any zoom) or PNG; ``figure`` is the matplotlib Figure."""

    def __init__(self, figure: Figure) -> None:
        self.figure = figure

    def _repr_svg_(self) -> str:
        buffer = io.StringIO()
        self.figure.savefig(buffer, format="svg", bbox_inches="tight")
        return buffer.getvalue()

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=150, bbox_inches="tight")
        return buffer.getvalue()


@dataclass
class Part:
    """One drawable piece of a cell: a line (``points``, arrow at the end), a layer box or an operation."""

    kind: str  # "line", "sigmoid", "tanh", "op", "text"
    points: list[tuple[float, float]]
    label: str = ""
    groups: set[str] = field(default_factory=set)


def _canvas(width: float, height: float, scale: float = 0.75) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width * scale, height * scale))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def _line(ax: Axes, points: list[tuple[float, float]], color: str = INK, lw: float = 1.8,
          arrow: bool = True) -> None:
    xs, ys = zip(*points, strict=True)
    ax.plot(xs, ys, color=color, lw=lw, solid_capstyle="butt", zorder=1)
    if arrow:
        ax.add_patch(FancyArrowPatch(points[-2], points[-1], arrowstyle="-|>", mutation_scale=14,
                                     color=color, lw=lw, shrinkA=0, shrinkB=0, zorder=2))


def _layer(ax: Axes, xy: tuple[float, float], text: str, fill: str, edge: str = INK, lw: float = 1.2,
           w: float = 1.0, h: float = 0.6) -> None:
    x, y = xy
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.04,rounding_size=0.1",
                                fc=fill, ec=edge, lw=lw, zorder=3))
    ax.text(x, y, text, ha="center", va="center", fontsize=FONT, zorder=4)


def _op(ax: Axes, xy: tuple[float, float], text: str, edge: str = INK, lw: float = 1.2) -> None:
    if text == "tanh":
        ax.add_patch(Ellipse(xy, 1.0, 0.55, fc=OP, ec=edge, lw=lw, zorder=3))
        ax.text(*xy, text, ha="center", va="center", fontsize=FONT - 2, zorder=4)
    else:
        ax.add_patch(Circle(xy, 0.27, fc=OP, ec=edge, lw=lw, zorder=3))
        ax.text(*xy, text, ha="center", va="center", fontsize=FONT - (2 if len(text) > 1 else 0), zorder=4)


def _render(ax: Axes, parts: Iterable[Part], highlight: Iterable[str]) -> None:
    """Draw parts; those in a highlighted group in red, the others grey when anything is highlighted."""
    highlight = set(highlight)
    for part in parts:
        lit = bool(part.groups & highlight)
        color = HIGHLIGHT if lit else (DIM if highlight else INK)
        lw = 3.0 if lit else 1.8
        if part.kind == "line":
            _line(ax, part.points, color, lw, arrow=part.label != "no-arrow")
        elif part.kind in ("sigmoid", "tanh"):
            fill = SIGMOID if part.kind == "sigmoid" else TANH
            _layer(ax, part.points[0], part.label, fill, edge=color, lw=lw if lit else 1.2)
        elif part.kind == "op":
            _op(ax, part.points[0], part.label, edge=color, lw=lw if lit else 1.2)
        else:  # text: a symbol next to a line
            ax.text(*part.points[0], part.label, ha="center", va="center", fontsize=FONT,
                    color=HIGHLIGHT if lit else INK, zorder=5)


# --- LSTM ---------------------------------------------------------------------------------------------------

def lstm_parts() -> list[Part]:
    """The LSTM cell: the cell-state belt on top (× forget, + write), the bus [h_{t-1}, x_t] below feeding
    the four layers f, i, c̃, o, and the output h_t = o_t ⊙ tanh(c_t) leaving on the right."""
    belt, bus = 5.4, 1.6
    layer_y, top = 2.8, 3.1
    f_x, i_x, c_x, o_x, out_x = 3.0, 4.6, 6.2, 7.8, 9.4
    return [
        Part("line", [(0.2, belt), (f_x - 0.27, belt)], groups={"cell", "forget"}),
        Part("line", [(f_x + 0.27, belt), (c_x - 0.27, belt)], groups={"cell"}),
        Part("line", [(c_x + 0.27, belt), (11.8, belt)], groups={"cell"}),
        Part("line", [(out_x, belt), (out_x, 4.45)], groups={"output"}),
        Part("line", [(0.2, bus), (o_x, bus)], label="no-arrow", groups={"combine"}),
        Part("line", [(2.0, 0.2), (2.0, bus)], label="no-arrow", groups={"combine"}),
        *[Part("line", [(x, bus), (x, layer_y - 0.33)], groups={"combine", g})
          for x, g in ((f_x, "forget"), (i_x, "input"), (c_x, "candidate"), (o_x, "output"))],
        Part("sigmoid", [(f_x, layer_y)], "σ", {"forget"}),
        Part("sigmoid", [(i_x, layer_y)], "σ", {"input"}),
        Part("tanh", [(c_x, layer_y)], "tanh", {"candidate"}),
        Part("sigmoid", [(o_x, layer_y)], "σ", {"output"}),
        Part("line", [(f_x, top + 0.05), (f_x, belt - 0.27)], groups={"forget"}),
        Part("line", [(i_x, top + 0.05), (i_x, 4.2), (c_x - 0.27, 4.2)], groups={"input"}),
        Part("line", [(c_x, top + 0.05), (c_x, 4.2 - 0.27)], groups={"candidate"}),
        Part("line", [(c_x, 4.2 + 0.27), (c_x, belt - 0.27)], groups={"input", "candidate", "cell"}),
        Part("line", [(o_x + 0.5, layer_y), (out_x - 0.27, layer_y)], groups={"output"}),
        Part("line", [(out_x, 4.2 - 0.28), (out_x, layer_y + 0.27)], groups={"output", "hidden"}),
        Part("line", [(out_x, layer_y - 0.27), (out_x, bus), (11.8, bus)], groups={"hidden"}),
        Part("op", [(f_x, belt)], "×", {"forget", "cell"}),
        Part("op", [(c_x, belt)], "+", {"input", "candidate", "cell"}),
        Part("op", [(c_x, 4.2)], "×", {"input", "candidate"}),
        Part("op", [(out_x, 4.2)], "tanh", {"output", "hidden"}),
        Part("op", [(out_x, layer_y)], "×", {"output", "hidden"}),
        Part("text", [(0.6, belt + 0.4)], "$c_{t-1}$", {"cell", "forget"}),
        Part("text", [(11.4, belt + 0.4)], "$c_t$", {"cell"}),
        Part("text", [(0.6, bus + 0.4)], "$h_{t-1}$", {"combine"}),
        Part("text", [(11.4, bus + 0.4)], "$h_t$", {"hidden"}),
        Part("text", [(2.45, 0.35)], "$x_t$", {"combine"}),
        Part("text", [(f_x + 0.35, 4.2)], "$f_t$", {"forget"}),
        Part("text", [(i_x - 0.35, 3.75)], "$i_t$", {"input"}),
        Part("text", [(c_x + 0.4, 3.65)], r"$\tilde{c}_t$", {"candidate"}),
        Part("text", [(o_x + 0.85, layer_y + 0.35)], "$o_t$", {"output"}),
    ]


def draw_lstm_cell(ax: Axes, highlight: Iterable[str] = ()) -> Axes:
    """The LSTM cell on a 12 × 6.3 axes (see ``lstm_parts``)."""
    ax.add_patch(Rectangle((1.4, 0.8), 9.4, 5.2, fc=CELL, ec="#9bbf8f", lw=1, zorder=0))
    _render(ax, lstm_parts(), highlight)
    return ax


def lstm_cell(highlight: Iterable[str] = ()) -> Diagram:
    """The LSTM cell; ``highlight`` takes groups of ``LSTM_GROUPS`` (e.g. ``("forget",)``)."""
    fig, ax = _canvas(12, 6.3)
    draw_lstm_cell(ax, highlight)
    return Diagram(fig)


# --- GRU ----------------------------------------------------------------------------------------------------

def gru_parts() -> list[Part]:
    """The GRU cell: one state line h_{t-1} → h_t on top with the mix (1 − z_t) ⊙ h̃_t + z_t ⊙ h_{t-1};
    below it the bus [h_{t-1}, x_t] feeding z_t, r_t and the candidate h̃_t (r_t scales its h_{t-1} term)."""
    top, bus, layer_y = 5.4, 1.6, 2.8
    z_x, r_x, h_x, keep_x, mix_x = 2.8, 4.4, 6.2, 7.6, 9.2
    return [
        Part("line", [(0.2, top), (keep_x - 0.27, top)], groups={"mix"}),
        Part("line", [(keep_x + 0.27, top), (mix_x - 0.27, top)], groups={"mix", "update"}),
        Part("line", [(mix_x + 0.27, top), (11.8, top)], groups={"mix"}),
        Part("line", [(1.1, top), (1.1, bus), (h_x, bus)], label="no-arrow", groups={"combine"}),
        Part("line", [(2.0, 0.2), (2.0, bus)], label="no-arrow", groups={"combine"}),
        *[Part("line", [(x, bus), (x, layer_y - 0.33)], groups={"combine", g})
          for x, g in ((z_x, "update"), (r_x, "reset"), (h_x, "candidate"))],
        Part("sigmoid", [(z_x, layer_y)], "σ", {"update"}),
        Part("sigmoid", [(r_x, layer_y)], "σ", {"reset"}),
        Part("tanh", [(h_x, layer_y)], "tanh", {"candidate"}),
        Part("line", [(r_x, 3.15), (r_x, 3.75), (h_x - 0.25, 3.75), (h_x - 0.25, 3.15)], groups={"reset"}),
        Part("line", [(z_x, 3.15), (z_x, 4.4), (keep_x, 4.4), (keep_x, top - 0.27)],
             groups={"update", "mix"}),
        Part("line", [(keep_x, 4.4), (8.4 - 0.3, 4.4)], groups={"update", "mix"}),
        Part("line", [(8.4 + 0.3, 4.4), (mix_x - 0.27, 4.4)], groups={"update", "mix"}),
        Part("line", [(h_x + 0.5, layer_y), (mix_x, layer_y), (mix_x, 4.4 - 0.27)],
             groups={"candidate", "mix"}),
        Part("line", [(mix_x, 4.4 + 0.27), (mix_x, top - 0.27)], groups={"mix"}),
        Part("op", [(keep_x, top)], "×", {"update", "mix"}),
        Part("op", [(8.4, 4.4)], "1−", {"update", "mix"}),
        Part("op", [(mix_x, 4.4)], "×", {"update", "mix"}),
        Part("op", [(mix_x, top)], "+", {"mix"}),
        Part("text", [(0.6, top + 0.4)], "$h_{t-1}$", {"mix"}),
        Part("text", [(11.4, top + 0.4)], "$h_t$", {"mix"}),
        Part("text", [(2.45, 0.35)], "$x_t$", {"combine"}),
        Part("text", [(z_x - 0.35, 3.8)], "$z_t$", {"update"}),
        Part("text", [(r_x + 0.45, 4.05)], "$r_t$", {"reset"}),
        Part("text", [(7.9, layer_y + 0.3)], r"$\tilde{h}_t$", {"candidate"}),
        Part("text", [(8.05, top - 0.45)], "$z_t$", {"update", "mix"}),
        Part("text", [(8.4, 3.95)], "$1-z_t$", {"update", "mix"}),
    ]


def gru_cell(highlight: Iterable[str] = ()) -> Diagram:
    """The GRU cell in PyTorch's convention (z_t keeps the old state); ``highlight``: ``GRU_GROUPS``."""
    fig, ax = _canvas(12, 6.3)
    ax.add_patch(Rectangle((1.4, 0.8), 9.4, 5.2, fc=CELL, ec="#9bbf8f", lw=1, zorder=0))
    _render(ax, gru_parts(), highlight)
    return Diagram(fig)


# --- plain RNN ----------------------------------------------------------------------------------------------

def rnn_cell() -> Diagram:
    """The plain RNN cell: [h_{t-1}, x_t] → one tanh layer → h_t (to the next step and to the output)."""
    fig, ax = _canvas(9, 5)
    ax.add_patch(Rectangle((1.4, 0.8), 6.2, 3.6, fc=CELL, ec="#9bbf8f", lw=1, zorder=0))
    _line(ax, [(0.2, 1.6), (4.5, 1.6)], arrow=False)
    _line(ax, [(3.0, 0.2), (3.0, 1.6)], arrow=False)
    _line(ax, [(4.5, 1.6), (4.5, 2.47)])
    _layer(ax, (4.5, 2.8), "tanh", TANH, w=1.2)
    _line(ax, [(4.5, 3.15), (4.5, 3.7), (8.8, 3.7)])
    _line(ax, [(6.6, 3.7), (6.6, 4.9)])
    for xy, text in (((0.6, 2.0), "$h_{t-1}$"), ((3.45, 0.35), "$x_t$"), ((8.5, 3.3), "$h_t$"),
                     ((7.1, 4.75), "$h_t$")):
        ax.text(*xy, text, ha="center", va="center", fontsize=FONT)
    ax.text(5.3, 2.2, r"$W_h \cdot [h_{t-1}, x_t] + b_h$", ha="left", va="center", fontsize=FONT - 2)
    return Diagram(fig)


def unrolled_rnn(steps: int = 4) -> Diagram:
    """The recurrent layer folded (one cell with a loop) and unrolled through time: the same cell at every
    step, h_{t-1} in from the left, x_t from below, h_t out to the next step and above."""
    width = 4.2 + 2.2 * steps
    fig, ax = _canvas(width, 4.4)
    _cell_box(ax, (1.3, 2.2), "cell")
    _line(ax, [(1.3, 0.4), (1.3, 1.8)])
    _line(ax, [(1.3, 2.6), (1.3, 3.8)])
    loop = FancyArrowPatch((1.85, 2.45), (1.85, 1.95), connectionstyle="arc3,rad=-1.8", arrowstyle="-|>",
                           mutation_scale=14, color=INK, lw=1.8, zorder=2)  # h_t comes back in as h_{t-1}
    ax.add_patch(loop)
    ax.text(1.3, 0.2, "$x_t$", ha="center", va="center", fontsize=FONT)
    ax.text(1.3, 4.05, "$h_t$", ha="center", va="center", fontsize=FONT)
    ax.text(2.9, 2.2, "=", ha="center", va="center", fontsize=FONT + 8)
    names = [str(t) for t in range(1, steps)] + ["T"]
    xs = [4.4 + 2.2 * k for k in range(steps)]
    _line(ax, [(3.3, 2.2), (xs[0] - 0.6, 2.2)])
    ax.text(3.5, 2.55, "$h_0$", ha="center", va="center", fontsize=FONT)
    for k, (x, t) in enumerate(zip(xs, names, strict=True)):
        _cell_box(ax, (x, 2.2), "cell")
        _line(ax, [(x, 0.4), (x, 1.8)])
        _line(ax, [(x, 2.6), (x, 3.8)])
        ax.text(x, 0.2, f"$x_{{{t}}}$", ha="center", va="center", fontsize=FONT)
        ax.text(x, 4.05, f"$h_{{{t}}}$", ha="center", va="center", fontsize=FONT)
        if k + 1 < steps:
            dots = k + 2 == steps
            _line(ax, [(x + 0.6, 2.2), (xs[k + 1] - 0.6, 2.2)], arrow=not dots, color=INK)
            if dots:
                ax.text((x + xs[k + 1]) / 2, 2.45, "⋯", ha="center", va="center", fontsize=FONT + 4)
    return Diagram(fig)


def _cell_box(ax: Axes, xy: tuple[float, float], text: str, fill: str = STATE) -> None:
    _layer(ax, xy, text, fill, w=1.1, h=0.75)


# --- gradients through time ---------------------------------------------------------------------------------

def gradient_paths() -> Diagram:
    """Backpropagation through time in a plain RNN (a product of step Jacobians, one matrix per step)
    beside the LSTM's cell state (an additive path: the gradient is only multiplied by the forget gates)."""
    steps = 4
    width = 3.2 + 2.4 * steps
    fig, ax = _canvas(width, 6.2)
    xs = [2.2 + 2.4 * k for k in range(steps)]
    rows = ((4.6, "h", "plain RNN", r"$\times\, J_{{{k}}}$", TANH),
            (1.4, "c", "LSTM cell state", r"$\times\, f_{{{k}}}$", SIGMOID))
    for y, state, title, factor, fill in rows:
        ax.text(0.1, y + 1.05, title, ha="left", va="center", fontsize=FONT, weight="bold")
        names = [f"{state}_{{t}}", f"{state}_{{t+1}}", "", f"{state}_T"]
        for k, x in enumerate(xs):
            label = "⋯" if names[k] == "" else f"${names[k]}$"
            _layer(ax, (x, y), label, fill if names[k] else "white", w=1.1, h=0.7)
            if k + 1 < steps:
                _line(ax, [(x + 0.6, y + 0.15), (xs[k + 1] - 0.6, y + 0.15)], color=INK, lw=1.4)
                _line(ax, [(xs[k + 1] - 0.6, y - 0.2), (x + 0.6, y - 0.2)], color=HIGHLIGHT, lw=2.4)
                k_name = ["t+1", "", "T"][k]
                if k_name:
                    ax.text((x + xs[k + 1]) / 2, y - 0.6, factor.format(k=k_name), ha="center",
                            va="center", fontsize=FONT - 1, color=HIGHLIGHT)
        _line(ax, [(xs[-1] + 0.6, y), (xs[-1] + 1.3, y)], arrow=False)
        ax.text(xs[-1] + 1.35, y, "loss", ha="left", va="center", fontsize=FONT - 1)
    ax.text(width / 2, 3.35, r"$\partial h_T / \partial h_t = J_T \cdots J_{t+1}$, "
            r"$J_k = \mathrm{diag}(1 - h_k^2)\, W_{hh}$, the same $W_{hh}$ at every step",
            ha="center", va="center", fontsize=FONT - 1)
    ax.text(width / 2, 0.2, r"along the belt $c_k = f_k \odot c_{k-1} + i_k \odot \tilde{c}_k$: "
            r"$\partial c_T / \partial c_t = f_T \odot \cdots \odot f_{t+1}$, no matrix, no tanh",
            ha="center", va="center", fontsize=FONT - 1)
    return Diagram(fig)


# --- the four sequence shapes -------------------------------------------------------------------------------

SHAPES = ("sequence → vector", "vector → sequence", "sequence → sequence", "encoder → decoder")


def sequence_shapes() -> Diagram:
    """The four ways of the first chapter, as rows of cells (green) with inputs (pink) below and outputs
    (blue) above: sequence → vector, vector → sequence, sequence → sequence, encoder → decoder."""
    fig = Figure(figsize=(11, 6.2))
    layouts = {  # per step: (input?, output?, cell colour)
        SHAPES[0]: [(1, 0, STATE)] * 3 + [(1, 1, STATE)],
        SHAPES[1]: [(1, 1, STATE)] + [(0, 1, STATE)] * 3,
        SHAPES[2]: [(1, 1, STATE)] * 4,
        SHAPES[3]: [(1, 0, STATE)] * 3 + [(0, 1, SIGMOID)] * 4,
    }
    examples = ("a review → its sentiment", "an image → a caption", "a sentence → the next word at each step",
                "English → German, lengths differ")
    for n, ((title, steps), example) in enumerate(zip(layouts.items(), examples, strict=True)):
        ax = fig.add_axes((0.02 + 0.5 * (n % 2), 0.52 - 0.5 * (n // 2), 0.46, 0.44))
        ax.set_xlim(0, 10)
        ax.set_ylim(-0.3, 4.3)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(f"{title}\n({example})", fontsize=FONT - 1)
        step = 9.0 / len(steps)
        for k, (has_in, has_out, fill) in enumerate(steps):
            x = 0.6 + step * (k + 0.5)
            _layer(ax, (x, 2.0), "", fill, w=0.8 * min(step, 1.3), h=0.6)
            if has_in:
                _layer(ax, (x, 0.4), "", OP, w=0.5 * min(step, 1.3), h=0.4)
                _line(ax, [(x, 0.62), (x, 1.66)], lw=1.4)
            if has_out:
                _layer(ax, (x, 3.6), "", TANH, w=0.5 * min(step, 1.3), h=0.4)
                _line(ax, [(x, 2.34), (x, 3.38)], lw=1.4)
            if k + 1 < len(steps):
                gap = 0.4 * min(step, 1.3) + 0.05
                _line(ax, [(x + gap, 2.0), (x + step - gap, 2.0)], lw=1.4)
    fig.text(0.5, 0.01, "pink: inputs $x_t$ · green: recurrent cell, state $h_t$ passed to the right · "
             "yellow: decoder cells · blue: outputs", ha="center", fontsize=FONT - 2)
    return Diagram(fig)
