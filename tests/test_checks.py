"""Each check of rnnlib.checks catches the mistake it is written for, with a message naming it."""

import re
import types

import numpy as np
import pytest
import torch

from rnnlib import checks
from rnnlib import numpy as rnp


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global random state (torch and numpy's legacy generator)."""
    torch.manual_seed(0)
    np.random.seed(0)


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


def rnn_states(x, h0, W, b, carry=True):
    """tanh RNN states over x: (T, B, D); with carry=False every step restarts from h0 (a typical slip)."""
    hs, h = [], h0
    for x_t in x:
        h = np.tanh(np.concatenate([h if carry else h0, x_t], axis=1) @ W.T + b)
        hs.append(h)
    return np.stack(hs)


def test_assert_sequence_close_names_the_first_wrong_step(inputs):
    x = checks.random_sequence(T=4, B=3, D=4, seed=2)
    W, b, h0 = inputs["W"], inputs["b"], inputs["h_prev"]
    expected = rnn_states(x, h0, W, b)
    checks.assert_sequence_close(rnn_states(x, h0, W, b), expected, "hs")
    with pytest.raises(
        AssertionError, match=r"hs: steps 0\.\.0 agree, step 1 does not .* previous step returned"
    ):
        checks.assert_sequence_close(rnn_states(x, h0, W, b, carry=False), expected, "hs")
    with pytest.raises(
        AssertionError, match=r"hs: already the first step is off .* Details: hs\[0\]: max abs"
    ):
        checks.assert_sequence_close(rnn_states(x, 0 * h0, W, b), expected, "hs")
    late = expected.copy()
    late[3, 1, 2] += 0.25
    with pytest.raises(AssertionError, match=r"steps 0\.\.2 agree, step 3 does not.*index \(1, 2\)"):
        checks.assert_sequence_close(late, expected, "hs")
    with pytest.raises(AssertionError, match=r"hs: expected shape \(4, 3, 4\), got \(3, 4\)"):
        checks.assert_sequence_close(expected[-1], expected, "hs")


def test_strict_floats_turns_overflow_into_a_named_failure():
    def naive_sigmoid(x):
        return 1.0 / (1.0 + np.exp(-x))

    before = np.geterr()
    x = np.array([-1000.0, 0.0, 1000.0])
    with pytest.raises(
        AssertionError, match="sigmoid at ±1000: numpy reported 'overflow encountered in exp'"
    ):
        with checks.strict_floats("sigmoid at ±1000"):
            naive_sigmoid(x)
    with pytest.raises(AssertionError, match="invalid value"):
        with checks.strict_floats("cell"):
            np.array([np.inf]) - np.array([np.inf])
    with checks.strict_floats("sigmoid"):
        stable = sigmoid(x)
    np.testing.assert_array_equal(stable, [0.0, 0.5, 1.0])
    assert np.geterr() == before
    with pytest.raises(ValueError, match="unrelated"):  # other errors pass through unchanged
        with checks.strict_floats("cell"):
            raise ValueError("unrelated")


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


# --- references and cell diagnoses --------------------------------------------------------------------------


def book_lstm_cell(x_t, h_prev, c_prev, gates, swap=None, order=("h", "c")):
    """The book's LSTM step in closed form; ``swap`` exchanges two gates' weights, ``order`` the outputs."""
    if swap:  # gates a and b exchange their weights and biases
        a, b = swap
        gates = (
            gates
            | {f"{p}_{a}": gates[f"{p}_{b}"] for p in "Wb"}
            | {f"{p}_{b}": gates[f"{p}_{a}"] for p in "Wb"}
        )
    v = np.concatenate([h_prev, x_t], axis=1)
    f, i, o = (sigmoid(v @ gates[f"W_{g}"].T + gates[f"b_{g}"]) for g in "fio")
    c_t = f * c_prev + i * np.tanh(v @ gates["W_c"].T + gates["b_c"])
    out = {"h": o * np.tanh(c_t), "c": c_t}
    return tuple(out[k] for k in order)


def book_gru_cell(x_t, h_prev, gates, z_on_old=True, with_b_hn=True):
    H = h_prev.shape[1]
    v = np.concatenate([h_prev, x_t], axis=1)
    r, z = (sigmoid(v @ gates[f"W_{g}"].T + gates[f"b_{g}"]) for g in "rz")
    b_hn = gates["b_hn"] if with_b_hn else 0.0
    n = np.tanh(x_t @ gates["W_h"][:, H:].T + gates["b_h"] + r * (h_prev @ gates["W_h"][:, :H].T + b_hn))
    return (1 - z) * n + z * h_prev if z_on_old else z * n + (1 - z) * h_prev


@pytest.fixture
def lstm_case():
    data = checks.random_cell_inputs("lstm", B=3, D=2, H=4, seed=5)
    return data["x_t"], data["h_prev"], data["c_prev"], checks.torch_gates("lstm", D=2, H=4, seed=5)


@pytest.fixture
def gru_case():
    data = checks.random_cell_inputs("gru", B=3, D=2, H=4, seed=6)
    return data["x_t"], data["h_prev"], checks.torch_gates("gru", D=2, H=4, seed=6)


def test_lstm_reference_matches_torch_lstm_cell(lstm_case):
    x_t, h_prev, c_prev, _ = lstm_case
    cell = torch.nn.LSTMCell(2, 4).double()
    params = {k: v.detach().numpy() for k, v in cell.state_dict().items()}
    gates = rnp.split_gates(params, "lstm")
    h_ref, c_ref = cell(torch.from_numpy(x_t), (torch.from_numpy(h_prev), torch.from_numpy(c_prev)))
    ref = checks.lstm_reference(x_t, h_prev, c_prev, gates)
    np.testing.assert_allclose(ref["h_t"], h_ref.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(ref["c_t"], c_ref.detach().numpy(), atol=1e-12)
    v = np.concatenate([h_prev, x_t], axis=1)
    np.testing.assert_allclose(ref["f_t"], sigmoid(v @ gates["W_f"].T + gates["b_f"]), atol=1e-12)
    np.testing.assert_allclose(ref["c_tilde"], np.tanh(v @ gates["W_c"].T + gates["b_c"]), atol=1e-12)


def test_gru_reference_matches_torch_gru_cell(gru_case):
    x_t, h_prev, _ = gru_case
    cell = torch.nn.GRUCell(2, 4).double()
    params = {k: v.detach().numpy() for k, v in cell.state_dict().items()}
    gates = rnp.split_gates(params, "gru")
    h_ref = cell(torch.from_numpy(x_t), torch.from_numpy(h_prev)).detach().numpy()
    ref = checks.gru_reference(x_t, h_prev, gates)
    np.testing.assert_allclose(ref["h_t"], h_ref, atol=1e-12)
    np.testing.assert_allclose(book_gru_cell(x_t, h_prev, gates), h_ref, atol=1e-12)


@pytest.mark.parametrize(
    "mode, gate, act",
    [("lstm", "f", sigmoid), ("lstm", "c", np.tanh), ("gru", "z", sigmoid), ("gru", "h", np.tanh)],
)
def test_gate_reference_is_the_closed_form(mode, gate, act):
    g = checks.random_gate_inputs(B=2, D=3, H=4, seed=9, scale=3.0)
    expected = act(np.concatenate([g["h_prev"], g["x_t"]], axis=1) @ g["W"].T + g["b"])
    got = checks.gate_reference(mode, gate)(g["x_t"], g["h_prev"], g["W"], g["b"])
    np.testing.assert_allclose(got, expected, atol=1e-12)
    with pytest.raises(ValueError, match="unknown gate 'q'"):
        checks.gate_reference(mode, "q")


def test_torch_helpers_agree_with_torch(lstm_case):
    x = checks.random_sequence(T=3, B=2, D=2, seed=1)
    lstm = checks.torch_rnn("lstm", D=2, H=4, seed=5)
    assert all(p.dtype == torch.float64 for p in lstm.parameters())
    assert torch.equal(lstm.weight_hh_l0, checks.torch_rnn("lstm", D=2, H=4, seed=5).weight_hh_l0)
    h0, c0 = np.zeros((2, 4)), np.ones((2, 4))
    hs, h_T, c_T = checks.run_torch(lstm, x, h0, c0)
    out, (h_n, c_n) = lstm(
        torch.from_numpy(x),
        (torch.zeros(1, 2, 4, dtype=torch.float64), torch.ones(1, 2, 4, dtype=torch.float64)),
    )
    assert hs.shape == (3, 2, 4) and type(hs) is np.ndarray
    np.testing.assert_array_equal(hs, out.detach().numpy())
    np.testing.assert_array_equal(c_T, c_n[0].detach().numpy())
    gates = lstm_case[3]
    np.testing.assert_array_equal(
        checks.torch_gates("lstm", D=2, H=4, seed=5, scale=2.0)["W_o"], 2 * gates["W_o"]
    )


def test_diagnose_lstm_cell_accepts_the_book_cell(lstm_case):
    checks.diagnose_lstm_cell(book_lstm_cell, *lstm_case)


@pytest.mark.parametrize(
    "mistake, message",
    [
        (dict(swap=("f", "i")), "the forget gate (W_f, b_f) and the input gate (W_i, b_i) are swapped"),
        (dict(swap=("c", "o")), "the candidate (W_c, b_c) and the output gate (W_o, b_o) are swapped"),
        (dict(order=("c", "h")), "the outputs are swapped — return (h_t, c_t) in this order"),
    ],
)
def test_diagnose_lstm_cell_names_the_mistake(lstm_case, mistake, message):
    def student(*args):
        return book_lstm_cell(*args, **mistake)

    with pytest.raises(AssertionError, match=re.escape(message)):
        checks.diagnose_lstm_cell(student, *lstm_case)


def test_diagnose_lstm_cell_isolates_a_wrong_gate(lstm_case):
    def wrong_output_gate(x_t, h_prev, c_prev, gates):
        """The output gate with the columns of W_o permuted: a wrong product W_o·[h_{t−1}, x_t] there only."""
        W_o = np.concatenate([gates["W_o"][:, 2:4], gates["W_o"][:, 0:2], gates["W_o"][:, 4:]], axis=1)
        return book_lstm_cell(x_t, h_prev, c_prev, gates | {"W_o": W_o})

    with pytest.raises(
        AssertionError, match=r"wrong when only the output gate \(W_o, b_o\) varies .* that gate"
    ):
        checks.diagnose_lstm_cell(wrong_output_gate, *lstm_case)

    def returns_one_array(*args):
        return book_lstm_cell(*args)[0]

    with pytest.raises(AssertionError, match=r"expected a tuple \(h_t, c_t\), got ndarray"):
        checks.diagnose_lstm_cell(returns_one_array, *lstm_case)


def test_diagnose_gru_cell(gru_case):
    checks.diagnose_gru_cell(book_gru_cell, *gru_case)
    with pytest.raises(AssertionError, match="z_t and 1 − z_t are exchanged"):
        checks.diagnose_gru_cell(lambda *a: book_gru_cell(*a, z_on_old=False), *gru_case)
    with pytest.raises(AssertionError, match="b_hn is missing"):
        checks.diagnose_gru_cell(lambda *a: book_gru_cell(*a, with_b_hn=False), *gru_case)

    def swapped_reset_update(x_t, h_prev, gates):
        swapped = gates | {"W_r": gates["W_z"], "b_r": gates["b_z"], "W_z": gates["W_r"], "b_z": gates["b_r"]}
        return book_gru_cell(x_t, h_prev, swapped)

    with pytest.raises(
        AssertionError, match=r"the reset gate \(W_r, b_r\) and the update gate \(W_z, b_z\) are"
    ):
        checks.diagnose_gru_cell(swapped_reset_update, *gru_case)


@pytest.mark.parametrize("mode", ["rnn", "lstm", "gru"])
def test_reference_functions_exist_and_are_blocked(mode):
    targets = checks.reference_functions(mode)
    originals = [getattr(owner, attr) for owner, attr in targets]
    module = checks.torch_rnn(mode, D=2, H=3)
    with pytest.raises(
        checks.ForbiddenCall, match=r"^torch\.nn\.modules\.rnn\.\w+\.forward is the reference"
    ):
        with checks.forbid(*targets):
            module(torch.zeros(1, 1, 2, dtype=torch.float64))
    assert [getattr(owner, attr) for owner, attr in targets] == originals
    with pytest.raises(ValueError, match="mode must be one of"):
        checks.reference_functions("transformer")
