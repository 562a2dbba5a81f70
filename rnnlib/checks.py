"""Checks shared by the autograded exercises (nbgrader test cells).

Every check raises ``AssertionError`` with a message a learner can act on: which output, which shape,
which term of an equation. The numpy helpers the checks rely on are bound here at import time, so a
notebook that later reassigns ``np.allclose`` (or any other numpy function) cannot fool them.

- ``assert_close(actual, expected, name)``      exact ndarray type, shape, finite values, then values
- ``assert_scalar_close(actual, expected, name)`` the same for a Python/numpy float
- ``diagnose_affine(student_fn, reference_fn, W, b, h_prev, x_t, name)``  for act(W·[h_{t-1}, x_t] + b):
  names the term (bias, input term, recurrent term, activation) that disagrees
- ``forbid((module, "name"), ...)``              the reference implementations raise while learner code runs
- ``random_cell_inputs(mode, B, D, H, seed)``, ``random_sequence(T, B, D, seed)``  seeded test data

Conventions: a gate function is called as ``fn(x_t, h_prev, W, b)`` with x_t: (B, D), h_prev: (B, H),
W: (H, H + D) acting on the concatenation [h_{t-1}, x_t], b: (H,), and returns (B, H).
"""

import builtins
import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

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
_float64 = np.float64
_floating = np.floating
_default_rng = np.random.default_rng
_type = builtins.type
_isinstance = builtins.isinstance
_float = builtins.float
_getattr = builtins.getattr
_setattr = builtins.setattr
_hasattr = builtins.hasattr

_NUM_GATES = {"rnn": 1, "lstm": 4, "gru": 3}


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
    prefix = _getattr(owner, "__name__", _type(owner).__name__)
    return f"{prefix}.{attr}"


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
