"""What a sandbox must not contain while an assignment is graded: the reference for the functions under test.

The tests run in the trusted process, so the sandbox needs no reference at all. For each assignment the
sandbox gets its own view of the library: a copy of ``rnnlib`` whose reference functions have their bodies
replaced by a ``raise`` (the source is gone too, so no alias, default argument, closure, private helper or
``exec`` of the file brings it back), and, where the answers are numpy code, a ``torch`` that is only a stub
(its fused RNN kernels are the reference as well, and a C++ kernel cannot be taken out of a loaded torch).
``rnnlib.checks`` is a stub wherever torch is, since the checks import torch and hold references themselves.
"""

import ast
import shutil
from dataclasses import dataclass, field
from pathlib import Path

_RNN = ("rnn_cell_forward", "rnn_forward", "rnn_cell_backward", "rnn_backward")
_LSTM = ("lstm_cell_forward", "lstm_forward", "lstm_cell_backward", "lstm_backward")
_GRU = ("gru_cell_forward", "gru_forward", "gru_cell_backward", "gru_backward")
_VANISHING = ("scalar_trajectory", "matrix_trajectory", "eigen_components", "state_jacobian_norms",
              "gradient_norms", "leaky_unit_norms")  # fmt: skip


@dataclass(frozen=True)
class Hidden:
    """Functions stripped from rnnlib's modules (module name -> function names), and whether torch is real."""

    functions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    torch: bool = True


HIDDEN: dict[str, Hidden] = {
    "01_recurrent_cell": Hidden(
        {"numpy": ("sigmoid", "tanh", *_RNN), "equations": ("rnn_cell",)}, torch=False
    ),
    "02_vanishing_gradients": Hidden({"vanishing": _VANISHING, "numpy": _RNN[2:]}, torch=False),
    "03_lstm_gates": Hidden({"numpy": _LSTM, "equations": ("lstm_cell",)}, torch=False),
    "04_gru_gates": Hidden({"numpy": _GRU, "equations": ("gru_cell",)}, torch=False),
    "05_lstm_backward": Hidden({"numpy": _LSTM[2:]}, torch=False),
    "06_train_and_compare": Hidden(),
}
NOTHING = Hidden(torch=False)  # an assignment without an entry: numpy only, no reference to strip

STUB = '''"""{name} is not available in the grading sandbox of this exercise: {why}"""


def __getattr__(attribute):
    raise AttributeError("{name}.%s is not available while this exercise is graded: {why}" % attribute)
'''


def strip(source: str, names: tuple[str, ...], module: str) -> str:
    """``source`` with the body of each top-level function in ``names`` replaced by a raise."""
    tree = ast.parse(source)
    found = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in names:
            found.add(node.name)
            message = f"rnnlib.{module}.{node.name} is the course's reference: not available while grading"
            node.body = [ast.Raise(ast.Call(ast.Name("NotImplementedError"), [ast.Constant(message)], []))]
            node.decorator_list = []
    missing = set(names) - found
    if missing:  # the table above and the library disagree: grading must not go on unprotected
        raise LookupError(f"rnnlib.{module} has no function {', '.join(sorted(missing))} to hide")
    return ast.unparse(ast.fix_missing_locations(tree))


def write_view(assignment: str, rnnlib_dir: Path, target: Path) -> Hidden:
    """The sandbox's rnnlib for ``assignment`` in ``target/rnnlib`` (and a torch stub in ``target/torch``)."""
    hidden = HIDDEN.get(assignment, NOTHING)
    view = target / "rnnlib"
    shutil.copytree(rnnlib_dir, view, ignore=shutil.ignore_patterns("__pycache__"))
    for module, names in hidden.functions.items():
        path = view / f"{module}.py"
        path.write_text(strip(path.read_text(), names, module))
    if not hidden.torch:
        why = "the answers are numpy code, and torch's recurrent kernels are the reference"
        (view / "checks.py").write_text(STUB.format(name="rnnlib.checks", why="the tests run in the grader"))
        (target / "torch").mkdir()
        (target / "torch" / "__init__.py").write_text(STUB.format(name="torch", why=why))
    return hidden
