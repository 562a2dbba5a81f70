"""Checks shared by the autograded exercises (nbgrader test cells).

Every check raises ``AssertionError`` with a message a learner can act on: which output, which shape,
which term of an equation. The numpy helpers the checks rely on are bound here at import time, so a
notebook that later reassigns ``np.allclose`` (or any other numpy function) cannot fool them.

- ``assert_close(actual, expected, name)``      exact ndarray type, shape, finite values, then values
- ``assert_scalar_close(actual, expected, name)`` the same for a Python/numpy float
- ``assert_sequence_close(hs, expected, name)``  (T, B, H) states, naming the first time step that is off
- ``strict_floats(name)``                        overflow or invalid values in the block fail with a message
- ``diagnose_affine(student_fn, reference_fn, W, b, h_prev, x_t, name)``  for act(W·[h_{t-1}, x_t] + b):
  names the term (bias, input term, recurrent term, activation) that disagrees
- ``forbid((module, "name"), ...)``              the reference implementations raise while learner code runs
- ``lstm_reference`` / ``gru_reference``          every intermediate of one step, from rnnlib's equations
- ``gate_reference(mode, gate)``                 one gate as fn(x_t, h_prev, W, b), for diagnose_affine
- ``diagnose_lstm_cell`` / ``diagnose_gru_cell``  name the gate whose weights a cell wires wrongly
- ``torch_rnn(mode, D, H, seed)``, ``run_torch(module, x, h0, c0)``  torch.nn as the independent reference
- ``torch_gates(mode, D, H, seed)``              a seeded torch.nn module's weights, per gate
- ``reference_functions(mode)``                  what ``forbid`` blocks while a learner's cell runs
- ``random_cell_inputs``, ``random_gate_inputs``, ``random_sequence``  seeded test data

Conventions: a gate function is called as ``fn(x_t, h_prev, W, b)`` with x_t: (B, D), h_prev: (B, H),
W: (H, H + D) acting on the concatenation [h_{t-1}, x_t], b: (H,), and returns (B, H). A cell's weights
are the book's per-gate dict of ``rnnlib.numpy.split_gates`` (LSTM W_f, b_f, W_i, b_i, W_c, b_c, W_o, b_o;
GRU W_r, b_r, W_z, b_z, W_h, b_h, b_hn).
"""

import builtins
import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from rnnlib import equations as _equations
from rnnlib import numpy as rnp

# The real helpers, captured once: learner code that rebinds np.<name> later does not change these.
_ndarray = np.ndarray
_asarray = np.asarray
_abs = np.abs
_isfinite = np.isfinite
_isnan = np.isnan
_argmax = np.argmax
_unravel_index = np.unravel_index
_all = np.all
_any = np.any
_zeros_like = np.zeros_like
_errstate = np.errstate
_float64 = np.float64
_floating = np.floating
_default_rng = np.random.default_rng
_type = builtins.type
_isinstance = builtins.isinstance
_float = builtins.float
_getattr = builtins.getattr
_setattr = builtins.setattr
_hasattr = builtins.hasattr

# rnnlib's reference pieces, captured the same way.
_lstm_cell = _equations.lstm_cell
_gru_cell = _equations.gru_cell
_from_numpy = torch.from_numpy
_no_grad = torch.no_grad
_sigmoid, _tanh = rnp.sigmoid, rnp.tanh
_stack_gates, _split_gates, _params_from_torch = rnp.stack_gates, rnp.split_gates, rnp.params_from_torch
_TORCH_MODULES = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
_TORCH_CELLS = {"rnn": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}
_TORCH_FUNCTIONS = {"rnn": "rnn_tanh", "lstm": "lstm", "gru": "gru"}

_NUM_GATES = {"rnn": 1, "lstm": 4, "gru": 3}


_GATE_KEYS = {"lstm": ("f", "i", "c", "o"), "gru": ("r", "z", "h")}
SATURATE = 40.0  # σ(±40) and tanh(±40) are 0 or 1 to within 5e-18: a gate switched fully off or on


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _check_form(actual: Any, expected: np.ndarray, name: str) -> None:
    """Exact type np.ndarray, numeric dtype and the expected shape, or an AssertionError."""
    if _type(actual) is not _ndarray:
        hint = (
            " (missing return?)" if actual is None else " (return the array itself, not a list or a wrapper)"
        )
        raise AssertionError(f"{name}: expected a numpy.ndarray, got {_type(actual).__name__}{hint}")
    if actual.dtype.kind not in "biuf":
        raise AssertionError(f"{name}: expected a floating-point array, got dtype {actual.dtype}")
    if actual.shape != expected.shape:
        hint = " (transposed?)" if actual.shape == expected.shape[::-1] and actual.ndim > 1 else ""
        raise AssertionError(f"{name}: expected shape {expected.shape}, got {actual.shape}{hint}")


def _value_error(actual: np.ndarray, expected: np.ndarray, name: str, atol: float, rtol: float) -> str | None:
    """A message naming the first non-finite value or the largest difference, or None when they agree."""
    got = _asarray(actual, dtype=_float64)
    finite = _isfinite(got)
    if not _all(finite):
        where = tuple(int(i) for i in _unravel_index(_argmax(~finite), got.shape))
        kind = "NaN" if _isnan(got[where]) else "inf"
        return (
            f"{name}: {kind} at index {where} (expected {_fmt(expected[where])}) — an overflow? "
            "Keep exp() away from large positive arguments"
        )
    diff = _abs(got - expected)
    bad = diff > atol + rtol * _abs(expected)
    if not _any(bad):
        return None
    where = tuple(int(i) for i in _unravel_index(_argmax(diff), got.shape))
    return (
        f"{name}: max abs difference {_fmt(diff[where])} at index {where} "
        f"(expected {_fmt(expected[where])}, got {_fmt(got[where])}); "
        f"{int(bad.sum())} of {bad.size} values are off"
    )


def assert_close(actual: Any, expected: Any, name: str, *, atol: float = 1e-8, rtol: float = 1e-6) -> None:
    """Check that ``actual`` is a numpy array equal to ``expected`` within ``atol + rtol·|expected|``.

    In order: exact type ``np.ndarray`` (no subclass, no look-alike), numeric dtype, shape, finite values,
    values. The first failure raises an AssertionError starting with ``name``.
    """
    expected = _asarray(expected, dtype=_float64)
    _check_form(actual, expected, name)
    message = _value_error(actual, expected, name, atol, rtol)
    if message is not None:
        raise AssertionError(message)


def assert_scalar_close(
    actual: Any, expected: float, name: str, *, atol: float = 1e-8, rtol: float = 1e-6
) -> None:
    """Check that ``actual`` is a Python or numpy float (or a 0-d array) close to ``expected``."""
    if _type(actual) is _ndarray and actual.ndim == 0:
        actual = actual[()]
    if not (_type(actual) in (_float, builtins.int) or _isinstance(actual, _floating)):
        raise AssertionError(f"{name}: expected a number, got {_type(actual).__name__}")
    assert_close(_asarray(_float(actual)), expected, name, atol=atol, rtol=rtol)


def assert_sequence_close(
    actual: Any, expected: Any, name: str, *, atol: float = 1e-8, rtol: float = 1e-6
) -> None:
    """``assert_close`` for states over time (T, ...): on a mismatch, name the first step that is off.

    A wrong first step points at the cell or the start state; a right first step followed by a wrong one
    points at how the state is carried from one step to the next.
    """
    expected = _asarray(expected, dtype=_float64)
    _check_form(actual, expected, name)
    if _value_error(actual, expected, name, atol, rtol) is None:
        return
    t, detail = next(
        (t, message)
        for t in range(len(expected))
        if (message := _value_error(actual[t], expected[t], f"{name}[{t}]", atol, rtol)) is not None
    )
    if t == 0:
        hint = "already the first step is off — check the cell and the start state."
    else:
        hint = (
            f"steps 0..{t - 1} agree, step {t} does not — does each step receive the state(s) the previous "
            "step returned?"
        )
    raise AssertionError(f"{name}: {hint} Details: {detail}")


@contextlib.contextmanager
def strict_floats(name: str) -> Iterator[None]:
    """Run the block with numpy's overflow, invalid-value and divide-by-zero warnings turned into failures.

    A learner's function that overflows (``np.exp(1000)``) fails with an AssertionError naming ``name``
    instead of silently returning inf or NaN.
    """
    try:
        with _errstate(over="raise", invalid="raise", divide="raise"):
            yield
    except FloatingPointError as error:
        raise AssertionError(
            f"{name}: numpy reported '{error}' — an intermediate value overflowed or became NaN. "
            "Keep exp() away from large positive arguments (rewrite the formula for that side)"
        ) from None


def diagnose_affine(
    student_fn: Callable,
    reference_fn: Callable,
    W: np.ndarray,
    b: np.ndarray,
    h_prev: np.ndarray,
    x_t: np.ndarray,
    name: str,
    *,
    atol: float = 1e-8,
    rtol: float = 1e-6,
) -> None:
    """Check ``student_fn(x_t, h_prev, W, b)`` against ``reference_fn`` for a gate act(W·[h_{t-1}, x_t] + b).

    On a mismatch both functions run again on inputs that switch on one term at a time (only the bias,
    only the input term, only the recurrent term), and the AssertionError names the term(s) that disagree.
    """
    H = h_prev.shape[-1]
    if W.shape != (H, H + x_t.shape[-1]):
        raise ValueError(f"diagnose_affine: W must be (H, H + D) = {(H, H + x_t.shape[-1])}, got {W.shape}")

    def mismatch(*args: np.ndarray) -> str | None:
        expected = _asarray(reference_fn(*args), dtype=_float64)
        actual = student_fn(*args)
        _check_form(actual, expected, name)  # a wrong type or shape is not a question of which term
        return _value_error(actual, expected, name, atol, rtol)

    full = mismatch(x_t, h_prev, W, b)
    if full is None:
        return
    zW, zb, zh, zx = _zeros_like(W), _zeros_like(b), _zeros_like(h_prev), _zeros_like(x_t)
    cases = {
        "activation": (zx, zh, zW, zb),
        "bias": (zx, zh, zW, b),
        "input term": (x_t, zh, W, zb),
        "recurrent term": (zx, h_prev, W, zb),
    }
    wrong = {}
    for term, args in cases.items():
        message = mismatch(*args)
        if message is not None:
            wrong[term] = message
    if "activation" in wrong:
        reason = (
            "with every input zero the output is act(0) — check the activation function "
            "(σ for a gate, tanh for a candidate)"
        )
        detail = wrong["activation"]
    elif "bias" in wrong:
        reason = (
            "with W = 0 the output act(b) disagrees — check the bias b (added once, inside the "
            "activation) and the activation (σ for a gate, tanh for a candidate)"
        )
        detail = wrong["bias"]
    elif "input term" in wrong or "recurrent term" in wrong:
        parts = []
        if "input term" in wrong:
            parts.append("the input term W·[0, x_t]")
        if "recurrent term" in wrong:
            parts.append("the recurrent term W·[h_{t−1}, 0]")
        reason = (
            " and ".join(parts)
            + (" disagrees" if len(parts) == 1 else " disagree")
            + " — check the order of the concatenation [h_{t−1}, x_t] (h first, then x) "
            "and that W multiplies it"
        )
        detail = next(wrong[t] for t in cases if t in wrong)
    else:
        reason = (
            "each term alone is right but their sum is not — apply the activation once, "
            "to W·[h_{t−1}, x_t] + b"
        )
        detail = full
    raise AssertionError(f"{name}: {reason}. Details: {detail}")


class ForbiddenCall(AssertionError):
    """Raised when learner code calls a reference implementation inside ``forbid``."""


def _qualname(owner: Any, attr: str) -> str:
    if _isinstance(owner, _type):  # a class: torch.nn.modules.rnn.LSTM.forward
        return f"{owner.__module__}.{owner.__qualname__}.{attr}"
    return f"{_getattr(owner, '__name__', _type(owner).__name__)}.{attr}"


def _default_namespaces() -> list[dict]:
    """The notebook's globals and those of rnnlib's modules (which import the equations by name)."""
    names = [n for n in sys.modules if n == "__main__" or (n.startswith("rnnlib") and n != __name__)]
    return [_getattr(sys.modules[n], "__dict__", {}) for n in names]


@contextlib.contextmanager
def forbid(*targets: tuple[Any, str], namespaces: list[dict] | None = None) -> Iterator[None]:
    """Make each ``(module_or_class, "attribute")`` raise ForbiddenCall while the block runs.

    Other names bound to the same objects are replaced too, in ``namespaces`` (default: the notebook's
    ``__main__`` globals, e.g. after ``from rnnlib.numpy import lstm_cell_forward``, and rnnlib's modules,
    so that ``rnnlib.torch`` cannot reach a forbidden equation either). Everything is restored on exit,
    and the block fails even if the learner's code caught the ForbiddenCall.
    """
    if namespaces is None:
        namespaces = _default_namespaces()
    calls: list[str] = []
    saved: list[tuple[Any, str, Any]] = []

    def blocker(label: str) -> Callable:
        def blocked(*args: Any, **kwargs: Any) -> None:
            calls.append(label)
            raise ForbiddenCall(f"{label} is the reference implementation: write the equations yourself")

        return blocked

    try:
        for owner, attr in targets:
            label = _qualname(owner, attr)
            if not _hasattr(owner, attr):
                raise AttributeError(f"forbid: {label} does not exist")
            original = _getattr(owner, attr)
            saved.append((owner, attr, original))
            _setattr(owner, attr, blocker(label))
            for namespace in namespaces:
                for key, value in list(namespace.items()):
                    if value is original:
                        saved.append((namespace, key, value))
                        namespace[key] = blocker(label)
        yield
    finally:
        for owner, attr, original in reversed(saved):
            if _isinstance(owner, dict):
                owner[attr] = original
            else:
                _setattr(owner, attr, original)
    if calls:
        raise ForbiddenCall(f"{calls[0]} is the reference implementation: write the equations yourself")


def random_cell_inputs(
    mode: str, B: int, D: int, H: int, seed: int = 0, scale: float = 1.0
) -> dict[str, np.ndarray]:
    """Seeded float64 inputs for one step of a cell in PyTorch's stacked layout.

    Returns x_t (B, D), h_prev (B, H), c_prev (B, H) for "lstm", and weight_ih (G·H, D), weight_hh (G·H, H),
    bias_ih, bias_hh (G·H,) drawn uniform(−scale/√H, scale/√H) like torch.nn (scale > 1 gives large
    pre-activations). Inputs and states are standard normal.
    """
    if mode not in _NUM_GATES:
        raise ValueError(f"mode must be one of {sorted(_NUM_GATES)}, got {mode!r}")
    rng = _default_rng(seed)
    G, k = _NUM_GATES[mode], scale / H**0.5
    out = {
        "x_t": rng.standard_normal((B, D)),
        "h_prev": rng.standard_normal((B, H)),
        "weight_ih": rng.uniform(-k, k, (G * H, D)),
        "weight_hh": rng.uniform(-k, k, (G * H, H)),
        "bias_ih": rng.uniform(-k, k, G * H),
        "bias_hh": rng.uniform(-k, k, G * H),
    }
    if mode == "lstm":
        out["c_prev"] = rng.standard_normal((B, H))
    return out


def random_sequence(T: int, B: int, D: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    """Seeded standard-normal inputs x: (T, B, D), times ``scale``."""
    return scale * _default_rng(seed).standard_normal((T, B, D))


def random_gate_inputs(B: int, D: int, H: int, seed: int = 0, scale: float = 1.0) -> dict[str, np.ndarray]:
    """Seeded inputs for one gate in the book's form: x_t (B, D), h_prev (B, H), W (H, H + D), b (H,)."""
    rng = _default_rng(seed)
    k = scale / H**0.5
    return {
        "x_t": rng.standard_normal((B, D)),
        "h_prev": rng.standard_normal((B, H)),
        "W": rng.uniform(-k, k, (H, H + D)),
        "b": rng.uniform(-k, k, H),
    }


# --- references from rnnlib's equations ---------------------------------------------------------------------


def _preactivations(x_t: np.ndarray, h_prev: np.ndarray, gates: dict, mode: str) -> tuple[np.ndarray, ...]:
    """PyTorch's split form W_ih x_t + b_ih and W_hh h_{t-1} + b_hh of the book's per-gate weights."""
    p = _stack_gates(gates, mode)
    return x_t @ p["weight_ih"].T + p["bias_ih"], h_prev @ p["weight_hh"].T + p["bias_hh"]


def lstm_reference(x_t: np.ndarray, h_prev: np.ndarray, c_prev: np.ndarray, gates: dict) -> dict:
    """One LSTM step by rnnlib.equations: f_t, i_t, c_tilde, o_t, c_t, h_t, each (B, H)."""
    a_x, a_h = _preactivations(x_t, h_prev, gates, "lstm")
    h_t, c_t, (i_t, f_t, c_tilde, o_t) = _lstm_cell(a_x + a_h, c_prev, _sigmoid, _tanh)
    return {"f_t": f_t, "i_t": i_t, "c_tilde": c_tilde, "o_t": o_t, "c_t": c_t, "h_t": h_t}


def gru_reference(x_t: np.ndarray, h_prev: np.ndarray, gates: dict) -> dict:
    """One GRU step by rnnlib.equations (PyTorch's convention): r_t, z_t, h_tilde, h_t, each (B, H)."""
    a_x, a_h = _preactivations(x_t, h_prev, gates, "gru")
    h_t, (r_t, z_t, h_tilde) = _gru_cell(a_x, a_h, h_prev, _sigmoid, _tanh)
    return {"r_t": r_t, "z_t": z_t, "h_tilde": h_tilde, "h_t": h_t}


def _constant_gates(mode: str, H: int, D: int, **biases: float) -> dict:
    """Per-gate weights all zero, with constant biases (e.g. f=SATURATE switches the forget gate on)."""
    gates = {}
    for g in _GATE_KEYS[mode]:
        gates[f"W_{g}"] = np.zeros((H, H + D))
        gates[f"b_{g}"] = np.full(H, _float(biases.get(g, 0.0)))
    if mode == "gru":
        gates["b_hn"] = np.zeros(H)
    return gates


_GATE_OUTPUT = {"lstm": {"f": "f_t", "i": "i_t", "c": "c_tilde", "o": "o_t"}, "gru": {"r": "r_t", "z": "z_t"}}


def gate_reference(mode: str, gate: str) -> Callable:
    """The reference of one gate as ``fn(x_t, h_prev, W, b)``, for ``diagnose_affine``.

    mode "lstm": gate "f", "i", "c" (candidate c̃_t, tanh) or "o"; mode "gru": "r", "z", or "h" (the candidate
    h̃_t with r_t = 1 and b_hn = 0, where it is tanh(W_h·[h_{t-1}, x_t] + b_h)).
    """
    if gate not in _GATE_KEYS.get(mode, ()):
        raise ValueError(f"gate_reference: unknown gate {gate!r} for mode {mode!r}")

    def reference(x_t: np.ndarray, h_prev: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
        H, D = h_prev.shape[-1], x_t.shape[-1]
        gates = _constant_gates(mode, H, D, r=SATURATE)  # r_t = 1 for the GRU candidate
        gates[f"W_{gate}"], gates[f"b_{gate}"] = W, b
        if mode == "lstm":
            return lstm_reference(x_t, h_prev, _zeros_like(h_prev), gates)[_GATE_OUTPUT[mode][gate]]
        if gate == "h":
            return gru_reference(x_t, h_prev, gates | {"b_z": np.full(H, -SATURATE)})["h_t"]
        return gru_reference(x_t, h_prev, gates)[_GATE_OUTPUT[mode][gate]]

    return reference


def _swapped(gates: dict, g1: str, g2: str) -> dict:
    """The per-gate weights with the W and b of gates g1 and g2 exchanged."""
    out = dict(gates)
    for part in ("W", "b"):
        out[f"{part}_{g1}"], out[f"{part}_{g2}"] = gates[f"{part}_{g2}"], gates[f"{part}_{g1}"]
    return out


def _diagnose_cell(
    student_fn: Callable,
    reference_fn: Callable,
    inputs: tuple,
    gates: dict,
    name: str,
    labels: tuple[str, ...],
    hypotheses: dict[str, tuple[dict, dict]],
    isolations: dict[str, dict],
    combine_hint: str,
    atol: float,
    rtol: float,
) -> None:
    """Compare ``student_fn(*inputs, gates)`` with ``reference_fn(*inputs, gates)`` (a tuple of outputs).

    On a mismatch, first try ``hypotheses``, label -> (student's gates, reference's gates) reproducing a
    typical mistake (two gates swapped, say): the first that makes both agree is the message. Else run
    ``isolations`` (label -> gates where only one gate varies) and name those that disagree.
    """

    def outputs(student_gates: dict) -> tuple:
        out = student_fn(*inputs, student_gates)
        if len(labels) == 1:
            return (out,)
        if _type(out) is not builtins.tuple or len(out) != len(labels):
            raise AssertionError(f"{name}: expected a tuple ({', '.join(labels)}), got {_type(out).__name__}")
        return out

    def mismatch(student_gates: dict, reference_gates: dict) -> str | None:
        expected = reference_fn(*inputs, reference_gates)
        for got, exp, label in zip(outputs(student_gates), expected, labels, strict=True):
            where = name if len(labels) == 1 else f"{name} ({label})"
            _check_form(got, exp, where)
            message = _value_error(got, exp, where, atol, rtol)
            if message is not None:
                return message
        return None

    full = mismatch(gates, gates)
    if full is None:
        return
    if len(labels) == 2:
        actual, expected = outputs(gates), reference_fn(*inputs, gates)
        if all(
            _value_error(g, e, name, atol, rtol) is None for g, e in zip(actual[::-1], expected, strict=True)
        ):
            raise AssertionError(
                f"{name}: the outputs are swapped — return ({', '.join(labels)}) in this order"
            )
    for label, (student_gates, reference_gates) in hypotheses.items():
        if mismatch(student_gates, reference_gates) is None:
            raise AssertionError(f"{name}: {label}. Details: {full}")
    wrong = [label for label, isolated in isolations.items() if mismatch(isolated, isolated) is not None]
    if not wrong:
        raise AssertionError(
            f"{name}: each gate alone is right but together they are not — {combine_hint}. {full}"
        )
    one = len(wrong) == 1
    raise AssertionError(
        f"{name}: wrong when only {' / '.join(wrong)} varies (the other gates switched fully on or off) — "
        f"check the weights you pass to {'that gate' if one else 'those gates'} and where "
        f"{'its output goes' if one else 'their outputs go'} (if a gate's own test above fails, fix that "
        f"first). Details: {full}"
    )


_LSTM_TITLES = {
    "f": "the forget gate (W_f, b_f)",
    "i": "the input gate (W_i, b_i)",
    "c": "the candidate (W_c, b_c)",
    "o": "the output gate (W_o, b_o)",
}
_GRU_TITLES = {
    "r": "the reset gate (W_r, b_r)",
    "z": "the update gate (W_z, b_z)",
    "h": "the candidate (W_h, b_h)",
}


def _swap_hypotheses(gates: dict, titles: dict) -> dict[str, tuple[dict, dict]]:
    keys = builtins.list(titles)
    return {
        f"{titles[g1]} and {titles[g2]} are swapped — each receives the other's weights": (
            _swapped(gates, g1, g2),
            gates,
        )
        for n, g1 in enumerate(keys)
        for g2 in keys[n + 1 :]
    }


def diagnose_lstm_cell(
    student_fn: Callable,
    x_t: np.ndarray,
    h_prev: np.ndarray,
    c_prev: np.ndarray,
    gates: dict,
    name: str = "lstm_cell_forward",
    *,
    atol: float = 1e-8,
    rtol: float = 1e-6,
) -> None:
    """Check ``student_fn(x_t, h_prev, c_prev, gates) -> (h_t, c_t)`` against ``lstm_reference``.

    On a mismatch the error names the mistake: outputs returned in the wrong order, two gates' weights
    swapped, or else the gate(s) that disagree when only that gate varies while the others are switched
    fully on or off (f_t, i_t, o_t, c̃_t ∈ {0, 1}); if every gate alone agrees, the way they are combined.
    """

    def reference(x_t, h_prev, c_prev, gates):
        ref = lstm_reference(x_t, h_prev, c_prev, gates)
        return ref["h_t"], ref["c_t"]

    H, D, S = h_prev.shape[-1], x_t.shape[-1], SATURATE
    # biases (f, i, c, o) of the switched gates: c_t = f_t ⊙ c_prev + i_t ⊙ c̃_t reduces to the varying gate
    switched = {"f": (0.0, -S, 0.0, S), "i": (-S, 0.0, S, S), "c": (-S, S, 0.0, S), "o": (S, -S, 0.0, 0.0)}
    isolations = {}
    for g, (bf, bi, bc, bo) in switched.items():
        isolated = _constant_gates("lstm", H, D, f=bf, i=bi, c=bc, o=bo)
        isolated[f"W_{g}"], isolated[f"b_{g}"] = gates[f"W_{g}"], gates[f"b_{g}"]
        isolations[_LSTM_TITLES[g]] = isolated
    _diagnose_cell(
        student_fn, reference, (x_t, h_prev, c_prev), gates, name, ("h_t", "c_t"),
        _swap_hypotheses(gates, _LSTM_TITLES), isolations,
        "check c_t = f_t ⊙ c_{t−1} + i_t ⊙ c̃_t and h_t = o_t ⊙ tanh(c_t)", atol, rtol,
    )  # fmt: skip


def diagnose_gru_cell(
    student_fn: Callable,
    x_t: np.ndarray,
    h_prev: np.ndarray,
    gates: dict,
    name: str = "gru_cell_forward",
    *,
    atol: float = 1e-8,
    rtol: float = 1e-6,
) -> None:
    """Check ``student_fn(x_t, h_prev, gates) -> h_t`` against ``gru_reference``, naming the mistake.

    Recognised: z_t and 1 − z_t exchanged (another convention), b_hn left out, two gates' weights swapped;
    else isolations: only z_t varies (candidate 0), only the candidate (z_t = 0, r_t = 1), only r_t (z_t = 0).
    """

    def reference(x_t, h_prev, gates):
        return (gru_reference(x_t, h_prev, gates)["h_t"],)

    H, D, S = h_prev.shape[-1], x_t.shape[-1], SATURATE
    flipped_z = gates | {"W_z": -gates["W_z"], "b_z": -gates["b_z"]}  # σ(−a) = 1 − σ(a)
    hypotheses = {
        "z_t and 1 − z_t are exchanged — in PyTorch's convention z_t multiplies the old state h_{t−1} and "
        "1 − z_t the candidate h̃_t": (flipped_z, gates),
        "b_hn is missing — it is added to W_hn h_{t−1} inside the reset gate's product": (
            gates,
            gates | {"b_hn": _zeros_like(gates["b_hn"])},
        ),
    } | _swap_hypotheses(gates, _GRU_TITLES)
    only_z = _constant_gates("gru", H, D) | {"W_z": gates["W_z"], "b_z": gates["b_z"]}
    only_h = _constant_gates("gru", H, D, r=S, z=-S) | {k: gates[k] for k in ("W_h", "b_h", "b_hn")}
    only_r = _constant_gates("gru", H, D, z=-S) | {k: gates[k] for k in ("W_r", "b_r", "W_h", "b_h", "b_hn")}
    isolations = {
        _GRU_TITLES["z"]: only_z,
        "the candidate (W_h, b_h, b_hn)": only_h,
        _GRU_TITLES["r"]: only_r,
    }
    _diagnose_cell(
        student_fn, reference, (x_t, h_prev), gates, name, ("h_t",), hypotheses, isolations,
        "check h_t = (1 − z_t) ⊙ h̃_t + z_t ⊙ h_{t−1}", atol, rtol,
    )  # fmt: skip


# --- torch.nn as the independent reference ------------------------------------------------------------------


def torch_rnn(mode: str, D: int, H: int, seed: int = 0) -> torch.nn.Module:
    """A seeded one-layer float64 ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` (PyTorch's own initialisation)."""
    if mode not in _TORCH_MODULES:
        raise ValueError(f"mode must be one of {sorted(_TORCH_MODULES)}, got {mode!r}")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    module = _TORCH_MODULES[mode](D, H).double()
    torch.random.set_rng_state(generator_state)
    return module


def run_torch(module: torch.nn.Module, x: np.ndarray, h0: np.ndarray, c0: np.ndarray | None = None) -> tuple:
    """Run a torch.nn recurrent module on numpy inputs x: (T, B, D), h0 (and c0): (B, H).

    Returns float64 numpy arrays hs (T, B, H), h_T (B, H), and c_T (B, H) for an LSTM.
    """
    h = _from_numpy(_asarray(h0, dtype=_float64))[None]
    hx = h if c0 is None else (h, _from_numpy(_asarray(c0, dtype=_float64))[None])
    with _no_grad():
        hs, state = module(_from_numpy(_asarray(x, dtype=_float64)), hx)
    if c0 is None:
        return hs.numpy(), state[0].numpy()
    return hs.numpy(), state[0][0].numpy(), state[1][0].numpy()


def torch_gates(mode: str, D: int, H: int, seed: int = 0, scale: float = 1.0) -> dict[str, np.ndarray]:
    """The weights of ``torch_rnn(mode, D, H, seed)`` in the book's per-gate form, times ``scale``.

    Converted with ``rnnlib.numpy.params_from_torch`` and ``split_gates``; a large ``scale`` gives large
    pre-activations (saturated gates).
    """
    gates = _split_gates(_params_from_torch(torch_rnn(mode, D, H, seed)), mode)
    return {key: scale * value for key, value in gates.items()}


def reference_functions(mode: str) -> list[tuple[Any, str]]:
    """The (owner, name) pairs a learner's ``mode`` cell must not call, for ``forbid``.

    rnnlib.numpy's forward and backward passes, rnnlib.equations' cell, this module's reference, torch's
    fused functions and the forward of torch.nn's module and cell.
    """
    if mode not in _TORCH_MODULES:
        raise ValueError(f"mode must be one of {sorted(_TORCH_MODULES)}, got {mode!r}")
    fused = _TORCH_FUNCTIONS[mode]
    targets = [(rnp, f"{mode}_{part}") for part in ("cell_forward", "forward", "cell_backward", "backward")]
    targets += [(_equations, f"{mode}_cell"), (torch, fused), (torch, f"{fused}_cell")]
    targets += [(_TORCH_MODULES[mode], "forward"), (_TORCH_CELLS[mode], "forward")]
    if mode != "rnn":
        targets.append((sys.modules[__name__], f"{mode}_reference"))
    return targets
