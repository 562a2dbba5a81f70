"""Each check of rnnlib.checks catches the mistake it is written for, with a message naming it."""

import types

import numpy as np
import pytest
import torch

from rnnlib import checks


def sigmoid(a: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * a))  # closed form, no overflow


def gate(x_t, h_prev, W, b):
    """The reference gate σ(W·[h_{t−1}, x_t] + b) for a batch of rows."""
    return sigmoid(np.concatenate([h_prev, x_t], axis=1) @ W.T + b)


@pytest.fixture
def inputs():
    return checks.random_gate_inputs(B=3, D=4, H=4, seed=1)  # D == H: a swapped concatenation still runs


# --- assert_close -------------------------------------------------------------------------------------------


def test_assert_close_accepts_equal_arrays_and_tolerance():
    a = np.linspace(-1, 1, 6).reshape(2, 3)
    checks.assert_close(a.copy(), a, "f")
    checks.assert_close(a + 1e-10, a, "f")
    checks.assert_close(a.astype(np.float32), a, "f", atol=1e-6)


def test_assert_close_wrong_shape_and_transpose_hint():
    a = np.zeros((2, 3))
    with pytest.raises(
        AssertionError, match=r"^forget_gate: expected shape \(2, 3\), got \(3, 2\) \(transposed\?\)"
    ):
        checks.assert_close(np.zeros((3, 2)), a, "forget_gate")
    with pytest.raises(AssertionError, match=r"expected shape \(2, 3\), got \(6,\)$"):
        checks.assert_close(np.zeros(6), a, "forget_gate")


def test_assert_close_names_index_and_difference():
    expected = np.zeros((2, 3))
    actual = expected.copy()
    actual[0, 1] = 0.41
    with pytest.raises(AssertionError, match=r"max abs difference 0\.41 at index \(0, 1\).*1 of 6 values"):
        checks.assert_close(actual, expected, "forget_gate")


@pytest.mark.parametrize("bad, kind", [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf")])
def test_assert_close_rejects_non_finite(bad, kind):
    actual = np.zeros((2, 2))
    actual[1, 0] = bad
    with pytest.raises(AssertionError, match=rf"{kind} at index \(1, 0\)"):
        checks.assert_close(actual, np.zeros((2, 2)), "sigmoid")


class LyingArray(np.ndarray):
    """An ndarray subclass that claims to equal anything."""

    def __eq__(self, other):
        return True

    def __sub__(self, other):
        return np.zeros(self.shape)


class LookAlike:
    shape = (2, 2)
    dtype = np.dtype(np.float64)

    def __eq__(self, other):
        return True

    def __array__(self, dtype=None, copy=None):
        return np.zeros(self.shape)


@pytest.mark.parametrize(
    "actual, message",
    [
        (np.ones((2, 2)).view(LyingArray), "got LyingArray"),
        (LookAlike(), "got LookAlike"),
        ([[1.0, 1.0], [1.0, 1.0]], "got list"),
        (None, r"got NoneType \(missing return\?\)"),
        (np.array([[object()] * 2] * 2, dtype=object), "dtype object"),
    ],
)
def test_assert_close_rejects_non_arrays(actual, message):
    with pytest.raises(AssertionError, match=message):
        checks.assert_close(actual, np.ones((2, 2)), "h_t")


def test_assert_close_survives_monkeypatched_numpy(monkeypatch):
    """Learner code that rebinds numpy's comparison helpers does not change the verdict."""
    monkeypatch.setattr(np, "allclose", lambda *a, **k: True)
    monkeypatch.setattr(np, "abs", lambda a: np.zeros_like(a))
    monkeypatch.setattr(np, "isfinite", lambda a: np.ones_like(a, dtype=bool))
    monkeypatch.setattr(np, "any", lambda a: False)
    with pytest.raises(AssertionError, match="max abs difference 1"):
        checks.assert_close(np.ones(3), np.zeros(3), "h_t")
    with pytest.raises(AssertionError, match="NaN"):
        checks.assert_close(np.full(3, np.nan), np.zeros(3), "h_t")


def test_assert_scalar_close():
    checks.assert_scalar_close(0.5, 0.5, "rho")
    checks.assert_scalar_close(np.float64(0.5), 0.5, "rho")
    checks.assert_scalar_close(np.array(0.5), 0.5, "rho")
    with pytest.raises(AssertionError, match="rho: max abs difference 0.1"):
        checks.assert_scalar_close(0.6, 0.5, "rho")
    with pytest.raises(AssertionError, match="rho: expected a number, got str"):
        checks.assert_scalar_close("0.5", 0.5, "rho")


# --- diagnose_affine ----------------------------------------------------------------------------------------


def test_diagnose_affine_accepts_the_right_gate(inputs):
    checks.diagnose_affine(
        gate, gate, inputs["W"], inputs["b"], inputs["h_prev"], inputs["x_t"], "forget_gate"
    )


def _diagnose(student, inputs, name="forget_gate"):
    with pytest.raises(AssertionError) as info:
        checks.diagnose_affine(student, gate, inputs["W"], inputs["b"], inputs["h_prev"], inputs["x_t"], name)
    return str(info.value)


def test_diagnose_affine_swapped_concatenation_names_both_terms(inputs):
    def swapped(x_t, h_prev, W, b):
        return sigmoid(np.concatenate([x_t, h_prev], axis=1) @ W.T + b)

    message = _diagnose(swapped, inputs)
    assert message.startswith("forget_gate: the input term W·[0, x_t] and the recurrent term W·[h_{t−1}, 0]")
    assert "order of the concatenation [h_{t−1}, x_t]" in message
    assert "bias" not in message.split("Details")[0]


def test_diagnose_affine_names_only_the_recurrent_term(inputs):
    def no_recurrence(x_t, h_prev, W, b):
        return gate(x_t, np.zeros_like(h_prev), W, b)

    message = _diagnose(no_recurrence, inputs)
    assert "the recurrent term W·[h_{t−1}, 0] disagrees" in message
    assert "input term" not in message


def test_diagnose_affine_names_only_the_input_term(inputs):
    def doubled_input(x_t, h_prev, W, b):
        return gate(2 * x_t, h_prev, W, b)

    message = _diagnose(doubled_input, inputs)
    assert "the input term W·[0, x_t] disagrees" in message
    assert "recurrent term" not in message


def test_diagnose_affine_missing_bias(inputs):
    def no_bias(x_t, h_prev, W, b):
        return gate(x_t, h_prev, W, 0 * b)

    assert "with W = 0 the output act(b) disagrees — check the bias b" in _diagnose(no_bias, inputs)


def test_diagnose_affine_wrong_activation(inputs):
    def with_tanh(x_t, h_prev, W, b):
        return np.tanh(np.concatenate([h_prev, x_t], axis=1) @ W.T + b)

    message = _diagnose(with_tanh, inputs, "input_gate")
    assert message.startswith("input_gate: with every input zero the output is act(0) — check the activation")
    assert "expected 0.5, got 0" in message


def test_diagnose_affine_activation_per_term(inputs):
    """Each term alone right, their sum wrong: the message says to apply the activation once."""

    def split_activation(x_t, h_prev, W, b):
        both = np.any(x_t != 0) and np.any(h_prev != 0)
        return gate(x_t, h_prev, W, b) * (1.1 if both else 1.0)

    assert "each term alone is right but their sum is not" in _diagnose(split_activation, inputs)


def test_diagnose_affine_wrong_shape_is_reported_as_such(inputs):
    def transposed(x_t, h_prev, W, b):
        return gate(x_t, h_prev, W, b).T

    message = _diagnose(transposed, inputs)
    assert message.startswith("forget_gate: expected shape (3, 4), got (4, 3) (transposed?)")


def test_diagnose_affine_rejects_a_badly_shaped_W(inputs):
    with pytest.raises(ValueError, match=r"W must be \(H, H \+ D\) = \(4, 8\), got \(8, 4\)"):
        checks.diagnose_affine(gate, gate, inputs["W"].T, inputs["b"], inputs["h_prev"], inputs["x_t"], "f")


# --- forbid -------------------------------------------------------------------------------------------------


def _reference_module():
    module = types.ModuleType("fake_reference")
    module.lstm_cell_forward = lambda *args: "reference result"
    module.sigmoid = lambda a: a
    return module


def test_forbid_raises_inside_and_restores_after():
    module = _reference_module()
    original = module.lstm_cell_forward
    with pytest.raises(checks.ForbiddenCall, match="^fake_reference.lstm_cell_forward is the reference"):
        with checks.forbid((module, "lstm_cell_forward"), namespaces=[]):
            module.lstm_cell_forward(1, 2)
    assert module.lstm_cell_forward is original
    assert module.lstm_cell_forward() == "reference result"
    with checks.forbid((module, "lstm_cell_forward"), namespaces=[]):
        assert module.sigmoid(3) == 3  # only the named attribute is blocked


def test_forbid_fails_even_when_the_learner_swallows_the_error():
    module = _reference_module()

    def sneaky():
        try:
            return module.lstm_cell_forward()
        except Exception:
            return "own answer"

    with pytest.raises(checks.ForbiddenCall, match="write the equations yourself"):
        with checks.forbid((module, "lstm_cell_forward"), namespaces=[]):
            assert sneaky() == "own answer"


def test_forbid_replaces_names_imported_into_the_notebook():
    module = _reference_module()
    namespace = {"lstm_cell_forward": module.lstm_cell_forward, "other": 1}
    with pytest.raises(checks.ForbiddenCall):
        with checks.forbid((module, "lstm_cell_forward"), namespaces=[namespace]):
            namespace["lstm_cell_forward"]()
    assert namespace["lstm_cell_forward"] is module.lstm_cell_forward
    assert namespace["other"] == 1


def test_forbid_restores_when_the_block_raises_and_checks_targets():
    module = _reference_module()
    original = module.lstm_cell_forward
    with pytest.raises(ZeroDivisionError):
        with checks.forbid((module, "lstm_cell_forward"), namespaces=[]):
            raise ZeroDivisionError
    assert module.lstm_cell_forward is original
    with pytest.raises(AttributeError, match="fake_reference.gru_cell_forward does not exist"):
        with checks.forbid((module, "lstm_cell_forward"), (module, "gru_cell_forward"), namespaces=[]):
            pass
    assert module.lstm_cell_forward is original


def test_forbid_reaches_equations_imported_by_name_into_rnnlib():
    """rnnlib.torch imports lstm_cell by name: forbidding rnnlib.equations.lstm_cell blocks it there too."""
    import rnnlib.equations
    import rnnlib.torch

    cell = rnnlib.torch.LSTMCell(2, 3)
    x = torch.zeros(1, 2)
    with pytest.raises(checks.ForbiddenCall, match="rnnlib.equations.lstm_cell is the reference"):
        with checks.forbid((rnnlib.equations, "lstm_cell")):
            cell(x)
    assert rnnlib.torch.lstm_cell is rnnlib.equations.lstm_cell
    assert cell(x)[0].shape == (1, 3)


def test_forbid_blocks_torch_functions():
    x = torch.zeros(2)
    with pytest.raises(checks.ForbiddenCall, match="torch.sigmoid is the reference"):
        with checks.forbid((torch, "sigmoid"), namespaces=[]):
            torch.sigmoid(x)
    assert torch.sigmoid(x)[0].item() == 0.5


# --- data helpers -------------------------------------------------------------------------------------------


def test_random_inputs_are_seeded_and_shaped():
    a = checks.random_cell_inputs("lstm", B=2, D=3, H=5, seed=7)
    b = checks.random_cell_inputs("lstm", B=2, D=3, H=5, seed=7)
    assert {k: v.shape for k, v in a.items()} == {
        "x_t": (2, 3),
        "h_prev": (2, 5),
        "c_prev": (2, 5),
        "weight_ih": (20, 3),
        "weight_hh": (20, 5),
        "bias_ih": (20,),
        "bias_hh": (20,),
    }
    assert all(np.array_equal(a[k], b[k]) for k in a)
    gru = checks.random_cell_inputs("gru", B=1, D=2, H=4, seed=0, scale=10.0)
    assert gru["weight_hh"].shape == (12, 4) and "c_prev" not in gru
    assert np.abs(gru["weight_ih"]).max() <= 10.0 / 2 and np.abs(gru["weight_ih"]).max() > 0.5
    with pytest.raises(ValueError, match="mode must be one of"):
        checks.random_cell_inputs("transformer", 1, 1, 1)
    assert checks.random_sequence(4, 2, 3, seed=1).shape == (4, 2, 3)
    g = checks.random_gate_inputs(B=2, D=3, H=4, seed=0)
    assert g["W"].shape == (4, 7) and g["b"].shape == (4,)
