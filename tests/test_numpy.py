"""rnnlib.numpy against torch.nn (forward and autograd), finite differences and closed forms."""

import warnings

import numpy as np
import pytest
import torch

from rnnlib import numpy as rnp


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global random state (torch and numpy's legacy generator)."""
    torch.manual_seed(0)
    np.random.seed(0)


MODES = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
SHAPES = [(5, 3, 4, 6), (1, 2, 3, 4), (7, 1, 2, 3), (1, 1, 1, 1)]  # (T, B, D, H)


def _torch_run(mode, T, B, D, H, seed):
    """A float64 torch.nn module, inputs, and autograd gradients of a random linear loss of all outputs."""
    torch.manual_seed(seed)
    module = MODES[mode](D, H).double()
    x = torch.randn(T, B, D, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, B, H, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(1, B, H, dtype=torch.float64, requires_grad=True)
    out, state = module(x, (h0, c0) if mode == "lstm" else h0)
    h_n, c_n = state if mode == "lstm" else (state, None)
    dhs, dh_T = torch.randn(T, B, H, dtype=torch.float64), torch.randn(1, B, H, dtype=torch.float64)
    dc_T = torch.randn(B, H, dtype=torch.float64)
    loss = (out * dhs).sum() + (h_n[0] * dh_T[0]).sum()
    if mode == "lstm":
        loss = loss + (c_n[0] * dc_T).sum()
    loss.backward()
    return module, x, h0, c0, out, h_n, c_n, dhs.numpy(), dh_T[0].numpy(), dc_T.numpy()


def _np_run(mode, x, h0, c0, params):
    if mode == "lstm":
        hs, (h_T, c_T), cache = rnp.lstm_forward(x, h0, c0, params)
        return hs, h_T, c_T, cache
    forward = rnp.rnn_forward if mode == "rnn" else rnp.gru_forward
    hs, h_T, cache = forward(x, h0, params)
    return hs, h_T, None, cache


def _np_backward(mode, dhs, cache, dh_T, dc_T):
    if mode == "lstm":
        return rnp.lstm_backward(dhs, cache, dh_T=dh_T, dc_T=dc_T)
    return (rnp.rnn_backward if mode == "rnn" else rnp.gru_backward)(dhs, cache, dh_T=dh_T)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", MODES)
def test_forward_and_backward_match_torch_autograd(mode, shape):
    module, x, h0, c0, out, h_n, c_n, dhs, dh_T, dc_T = _torch_run(mode, *shape, seed=sum(shape))
    params = rnp.params_from_torch(module)
    hs, h_T, c_T, cache = _np_run(
        mode, x.detach().numpy(), h0[0].detach().numpy(), c0[0].detach().numpy(), params
    )
    np.testing.assert_allclose(hs, out.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(h_T, h_n[0].detach().numpy(), rtol=0, atol=1e-12)
    if mode == "lstm":
        np.testing.assert_allclose(c_T, c_n[0].detach().numpy(), rtol=0, atol=1e-12)
    grads = _np_backward(mode, dhs, cache, dh_T, dc_T)
    expected = {"x": x.grad.numpy(), "h0": h0.grad[0].numpy()}
    expected |= {name: getattr(module, name + "_l0").grad.numpy() for name in rnp.PARAM_NAMES}
    if mode == "lstm":
        expected["c0"] = c0.grad[0].numpy()
    assert set(grads) == set(expected)
    for name, value in expected.items():
        assert grads[name].shape == value.shape, name
        assert rnp.rel_error(grads[name], value) < 1e-10, name


def _random_problem(mode, T, B, D, H, seed):
    rng = np.random.default_rng(seed)
    params = rnp.init_params(mode, D, H, seed=seed)
    x, h0, c0 = rng.standard_normal((T, B, D)), rng.standard_normal((B, H)), rng.standard_normal((B, H))
    dhs, dh_T, dc_T = rng.standard_normal((T, B, H)), rng.standard_normal((B, H)), rng.standard_normal((B, H))
    return params, x, h0, c0, dhs, dh_T, dc_T


@pytest.mark.parametrize("mode", MODES)
def test_sequence_backward_matches_finite_differences(mode):
    params, x, h0, c0, dhs, dh_T, dc_T = _random_problem(mode, T=4, B=2, D=3, H=3, seed=1)

    def loss():
        hs, h_T, c_T, _ = _np_run(mode, x, h0, c0, params)
        return np.sum(hs * dhs) + np.sum(h_T * dh_T) + (np.sum(c_T * dc_T) if mode == "lstm" else 0.0)

    grads = _np_backward(mode, dhs, _np_run(mode, x, h0, c0, params)[3], dh_T, dc_T)
    arrays = {"x": x, "h0": h0, **params} | ({"c0": c0} if mode == "lstm" else {})
    for name, array in arrays.items():
        assert rnp.rel_error(grads[name], rnp.numerical_gradient(loss, array)) < 1e-7, name


@pytest.mark.parametrize("mode", MODES)
def test_cell_forward_and_backward(mode):
    """A cell is one step: same numbers as the sequence with T = 1, gradients by finite differences."""
    params, x, h0, c0, dhs, dh_T, dc_T = _random_problem(mode, T=1, B=3, D=2, H=4, seed=2)
    x_t = x[0]
    if mode == "lstm":

        def loss():
            h_t, c_t, _ = rnp.lstm_cell_forward(x_t, h0, c0, params)
            return np.sum(h_t * dh_T) + np.sum(c_t * dc_T)

        h_t, c_t, cache = rnp.lstm_cell_forward(x_t, h0, c0, params)
        grads = rnp.lstm_cell_backward(dh_T, dc_T, cache)
        arrays = {"x": x_t, "h_prev": h0, "c_prev": c0, **params}
    else:
        cell_forward = rnp.rnn_cell_forward if mode == "rnn" else rnp.gru_cell_forward
        cell_backward = rnp.rnn_cell_backward if mode == "rnn" else rnp.gru_cell_backward

        def loss():
            return np.sum(cell_forward(x_t, h0, params)[0] * dh_T)

        h_t, cache = cell_forward(x_t, h0, params)
        grads = cell_backward(dh_T, cache)
        arrays = {"x": x_t, "h_prev": h0, **params}
    np.testing.assert_array_equal(h_t, _np_run(mode, x, h0, c0, params)[1])
    assert set(grads) == set(arrays)
    for name, array in arrays.items():
        assert rnp.rel_error(grads[name], rnp.numerical_gradient(loss, array)) < 1e-7, name


def test_sigmoid_is_stable_and_exact():
    x = np.linspace(-50, 50, 1001)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = rnp.sigmoid(x)
        extreme = rnp.sigmoid(np.array([-1e4, -800.0, 800.0, 1e4]))
    reference = 1.0 / (1.0 + np.exp(-x.astype(np.longdouble)))
    assert np.max(np.abs(s - reference) / reference) < 1e-14  # relative accuracy, also for σ(-50) ≈ 2e-22
    np.testing.assert_array_equal(extreme, [0.0, 0.0, 1.0, 1.0])
    assert rnp.sigmoid(np.float32(1.0)).dtype == np.float32
    assert float(rnp.sigmoid(0)) == 0.5


@pytest.mark.parametrize("fn, dfn", [(rnp.sigmoid, rnp.dsigmoid), (rnp.tanh, rnp.dtanh)])
def test_derivatives_match_finite_differences(fn, dfn):
    x = np.linspace(-6, 6, 49)
    numeric = (fn(x + 1e-6) - fn(x - 1e-6)) / 2e-6
    np.testing.assert_allclose(dfn(x), numeric, rtol=0, atol=1e-9)


def test_numerical_gradient_and_rel_error_on_closed_forms():
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    np.testing.assert_allclose(rnp.numerical_gradient(lambda: np.sum(x**3), x), 3 * x**2, rtol=1e-8)
    np.testing.assert_array_equal(x, [[1.0, -2.0], [0.5, 3.0]])  # restored after perturbation
    assert rnp.rel_error(x, x) == 0.0
    assert rnp.rel_error(np.array([1.0]), np.array([3.0])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="float64"):
        rnp.numerical_gradient(lambda: 0.0, np.zeros(3, dtype=np.float32))


@pytest.mark.parametrize("mode", MODES)
def test_split_gates_is_the_books_concatenated_form(mode):
    """W_k = [W_hk, W_ik] acting on [h_{t-1}, x_t]; the round trip through stack_gates keeps the forward."""
    torch.manual_seed(3)
    module = MODES[mode](2, 3).double()
    params, H = rnp.params_from_torch(module), 3
    gates = rnp.split_gates(params, mode)
    names = {"rnn": ["h"], "lstm": ["i", "f", "c", "o"], "gru": ["r", "z", "h"]}[mode]
    for k, name in enumerate(names):  # torch's stacking order: LSTM i, f, g, o; GRU r, z, n
        rows = slice(k * H, (k + 1) * H)
        W_hk, W_ik = module.weight_hh_l0[rows].detach().numpy(), module.weight_ih_l0[rows].detach().numpy()
        np.testing.assert_array_equal(gates[f"W_{name}"], np.hstack([W_hk, W_ik]))
    x, h0 = (
        np.random.default_rng(4).standard_normal((5, 2, 2)),
        np.random.default_rng(5).standard_normal((2, 3)),
    )
    restacked = rnp.stack_gates(gates, mode)
    np.testing.assert_allclose(
        _np_run(mode, x, h0, h0, restacked)[0], _np_run(mode, x, h0, h0, params)[0], rtol=0, atol=1e-14
    )


def test_float32_stays_float32_and_matches_torch():
    torch.manual_seed(6)
    module = torch.nn.LSTM(4, 5)
    x = torch.randn(6, 2, 4)
    params = {k: v.astype(np.float32) for k, v in rnp.params_from_torch(module).items()}
    hs, _, _ = rnp.lstm_forward(x.numpy(), None, None, params)
    assert hs.dtype == np.float32
    np.testing.assert_allclose(hs, module(x)[0].detach().numpy(), rtol=0, atol=1e-5)


def test_init_params_layout_range_and_seed():
    params = rnp.init_params("gru", 3, 4, seed=7)
    assert {k: v.shape for k, v in params.items()} == {
        "weight_ih": (12, 3),
        "weight_hh": (12, 4),
        "bias_ih": (12,),
        "bias_hh": (12,),
    }
    assert all(np.abs(v).max() <= 0.5 for v in params.values())  # 1/√H
    again = rnp.init_params("gru", 3, 4, seed=7)
    assert all(np.array_equal(params[k], again[k]) for k in params)
    assert not np.array_equal(params["weight_ih"], rnp.init_params("gru", 3, 4, seed=8)["weight_ih"])


def test_params_from_torch_reads_layers_and_cells():
    torch.manual_seed(8)
    two = torch.nn.GRU(3, 4, num_layers=2)
    np.testing.assert_array_equal(
        rnp.params_from_torch(two, layer=1)["weight_ih"], two.weight_ih_l1.detach().numpy()
    )
    cell = torch.nn.LSTMCell(3, 4, bias=False)
    params = rnp.params_from_torch(cell)
    np.testing.assert_array_equal(params["bias_hh"], np.zeros(16))
    with pytest.raises(ValueError, match="layer 2"):
        rnp.params_from_torch(two, layer=2)


def test_bad_input_is_named():
    params = rnp.init_params("lstm", 3, 4)
    x, h = np.zeros((5, 2, 3)), np.zeros((2, 4))
    cases = [
        (
            lambda: rnp.lstm_forward(np.zeros((5, 2, 7)), h, h, params),
            r"x: expected shape \(T, B, D\).*D = 3.*\(5, 2, 7\)",
        ),
        (lambda: rnp.lstm_forward(np.zeros((2, 3)), h, h, params), r"x: expected shape \(T, B, D\)"),
        (
            lambda: rnp.lstm_forward(x, np.zeros((3, 4)), h, params),
            r"h0: expected shape \(2, 4\), got \(3, 4\)",
        ),
        (
            lambda: rnp.lstm_forward(x, h, np.zeros((2, 5)), params),
            r"c0: expected shape \(2, 4\), got \(2, 5\)",
        ),
        (lambda: rnp.gru_forward(x, h, params), r"weight_hh: expected shape \(3·H, H\)"),
        (lambda: rnp.lstm_forward(x, h, h, {**params, "extra": 1}), "expected the keys"),
        (lambda: rnp.lstm_forward(x, h, h, rnp.split_gates(params, "lstm")), "stack_gates"),
        (lambda: rnp.lstm_forward(np.full((5, 2, 3), np.nan), h, h, params), "x contains NaN"),
        (
            lambda: rnp.lstm_forward(x, h, h, {**params, "bias_ih": np.full(16, np.inf)}),
            "bias_ih contains NaN",
        ),
        (
            lambda: rnp.lstm_forward(x, h, h, {**params, "bias_hh": np.zeros(15)}),
            r"bias_hh: expected shape \(16,\)",
        ),
        (lambda: rnp.lstm_forward(x.astype(complex), h, h, params), "real floating-point"),
        (
            lambda: rnp.lstm_backward(np.zeros((4, 2, 4)), rnp.lstm_forward(x, h, h, params)[2]),
            r"dhs: expected shape \(5, 2, 4\)",
        ),
        (
            lambda: rnp.rnn_cell_forward(np.zeros(3), h, rnp.init_params("rnn", 3, 4)),
            r"x_t: expected shape \(B, D\)",
        ),
        (lambda: rnp.init_params("transformer", 3, 4), "mode must be one of"),
        (lambda: rnp.stack_gates({"W_f": np.zeros((4, 7))}, "lstm"), "expected keys"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.parametrize("mode", MODES)
def test_bidirectional_matches_torch(mode):
    """rnnlib.numpy's bidirectional layer against torch.nn's: values and every gradient."""
    T, B, D, H = 5, 3, 2, 4
    torch.manual_seed(21)
    module = MODES[mode](D, H, bidirectional=True).double()
    x = torch.randn(T, B, D, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, B, H, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, B, H, dtype=torch.float64, requires_grad=True)
    out, state = module(x, (h0, c0) if mode == "lstm" else h0)
    finals = state if mode == "lstm" else (state,)
    dhs = torch.randn(T, B, 2 * H, dtype=torch.float64)
    d_finals = [torch.randn(2, B, H, dtype=torch.float64) for _ in finals]
    (sum((s * d).sum() for s, d in zip(finals, d_finals, strict=True)) + (out * dhs).sum()).backward()

    params, params_reverse = rnp.params_from_torch(module), rnp.params_from_torch(module, reverse=True)
    states = (h0.detach().numpy(), c0.detach().numpy()) if mode == "lstm" else (h0.detach().numpy(),)
    hs, final, cache = rnp.bidirectional_forward(mode, x.detach().numpy(), params, params_reverse, *states)
    np.testing.assert_allclose(hs, out.detach().numpy(), rtol=0, atol=1e-12)
    for ours, theirs in zip(final if mode == "lstm" else (final,), finals, strict=True):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=0, atol=1e-12)
    d_n = {"dh_n": d_finals[0].numpy()} | ({"dc_n": d_finals[1].numpy()} if mode == "lstm" else {})
    grads = rnp.bidirectional_backward(dhs.numpy(), cache, **d_n)
    expected = {"x": x.grad, "h0": h0.grad} | ({"c0": c0.grad} if mode == "lstm" else {})
    expected |= {name.replace("_l0", ""): p.grad for name, p in module.named_parameters()}
    assert set(grads) == set(expected)
    for name, value in expected.items():
        assert rnp.rel_error(grads[name], value.numpy()) < 1e-10, name
