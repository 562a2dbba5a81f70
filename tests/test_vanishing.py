"""rnnlib.vanishing against closed forms, torch autograd on torch.nn, and the NumPy BPTT of rnnlib.numpy;
the claims the vanishing-gradients chapter makes; rnnlib.plots' gradient figures."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import rnnlib.torch as rtorch  # noqa: E402
from rnnlib import plots  # noqa: E402
from rnnlib.vanishing import (  # noqa: E402
    eigen_components,
    gradient_norms,
    leaky_unit_norms,
    matrix_trajectory,
    matrix_with_eigenvalues,
    repeated_vs_distinct,
    scalar_trajectory,
    scale_to_spectral_radius,
    skip_connection_norms,
    state_jacobian_norms,
)


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global random state (torch and numpy's legacy generator)."""
    torch.manual_seed(0)
    np.random.seed(0)


# --- the scalar and matrix recurrences ---------------------------------------------------------------------


def test_scalar_trajectory_is_exactly_powers_of_w():
    n = np.arange(61)
    # powers of 0.5 and 2 are exact in floating point, so repeated multiplication must match bit for bit
    assert np.array_equal(scalar_trajectory(0.5, 60, x0=3.0), 3.0 * 0.5**n)
    assert np.array_equal(scalar_trajectory(2.0, 60), 2.0**n)
    np.testing.assert_allclose(scalar_trajectory(0.97, 60, x0=-2.0), -2.0 * 0.97**n, rtol=1e-12)


def test_scalar_trajectory_explodes_and_vanishes():
    assert scalar_trajectory(1.1, 100)[-1] > 1e4
    assert scalar_trajectory(0.9, 100)[-1] < 1e-4
    assert np.all(scalar_trajectory(1.0, 100) == 1.0)


def test_matrix_with_eigenvalues_has_them_with_well_conditioned_eigenvectors():
    lam = np.array([1.05, 0.8, -0.3, 0.5])
    W = matrix_with_eigenvalues(lam, seed=3)
    assert W.shape == (4, 4) and np.isrealobj(W)
    found, vectors = np.linalg.eig(W)
    np.testing.assert_allclose(np.sort(found.real), np.sort(lam), atol=1e-10)
    np.testing.assert_allclose(found.imag, 0, atol=1e-10)
    assert np.linalg.cond(vectors) < 10
    assert not np.allclose(W, W.T)  # not a symmetric matrix: the eigenvectors are not orthogonal
    assert np.array_equal(W, matrix_with_eigenvalues(lam, seed=3))


@pytest.mark.parametrize("bad", [[], [[1.0, 0.5]], [1.0 + 1j, 1.0 - 1j]])
def test_matrix_with_eigenvalues_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        matrix_with_eigenvalues(bad)


@pytest.mark.parametrize("rho", [0.5, 0.9, 1.0, 1.3])
def test_scale_to_spectral_radius(rho):
    W = np.random.default_rng(0).normal(size=(16, 16))
    scaled = scale_to_spectral_radius(W, rho)
    assert np.max(np.abs(np.linalg.eigvals(scaled))) == pytest.approx(rho, rel=1e-10)
    ratio = scaled / W
    np.testing.assert_allclose(ratio, ratio[0, 0])  # only rescaled, no other change


@pytest.mark.parametrize("bad", [np.ones((2, 3)), np.ones(3), np.zeros((3, 3)), np.triu(np.ones((3, 3)), 1)])
def test_scale_to_spectral_radius_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        scale_to_spectral_radius(bad, 1.0)


def test_matrix_trajectory_is_matrix_powers():
    W = np.random.default_rng(1).normal(size=(5, 5)) / 3
    x0 = np.arange(1.0, 6.0)
    xs = matrix_trajectory(W, x0, 12)
    assert xs.shape == (13, 5)
    for n in range(13):
        np.testing.assert_allclose(xs[n], np.linalg.matrix_power(W, n) @ x0, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match=r"\(5,\)"):
        matrix_trajectory(W, np.ones(4), 3)


def test_eigen_components_grow_like_eigenvalue_powers():
    W = matrix_with_eigenvalues([1.2, 0.9, -0.5], seed=0)
    x0 = np.array([1.0, -2.0, 0.5])
    xs = matrix_trajectory(W, x0, 40)
    components = eigen_components(W, xs)
    lam, Q = np.linalg.eig(W)
    c0 = np.linalg.solve(Q, x0)  # x0 = Σ c_i q_i
    expected = np.abs(c0) * np.abs(lam) ** np.arange(41)[:, None]
    scale = np.linalg.norm(xs, axis=1, keepdims=True)  # rounding errors are relative to the whole state
    np.testing.assert_allclose(components / scale, expected / scale, rtol=1e-9, atol=1e-13)
    assert np.all(components[0] > 1e-3)


def test_eigen_components_rejects_mismatched_states():
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        eigen_components(np.eye(2), np.ones((5, 3)))


# --- one matrix repeated versus a new matrix at every step -------------------------------------------------


@pytest.mark.parametrize("rho", [0.9, 1.0, 1.1])
def test_repeated_product_settles_on_rho_per_step(rho):
    result = repeated_vs_distinct(size=32, depth=100, rho=rho, seed=0)
    assert set(result) == {"repeated", "distinct"}
    for values in result.values():
        assert values.shape == (101,) and values[0] == pytest.approx(1.0)
    rate = (result["repeated"][100] / result["repeated"][50]) ** (1 / 50)
    assert rate == pytest.approx(rho, rel=0.01)  # x_n lines up with the top eigenvector: ×ρ per step


@pytest.mark.parametrize("rho", [0.9, 1.0, 1.1])
def test_distinct_matrices_do_not_compound_at_rate_rho(rho):
    result = repeated_vs_distinct(size=32, depth=100, rho=rho, seed=0)
    rate = (result["distinct"][100] / result["distinct"][0]) ** (1 / 100)
    assert rate < 0.97 * rho  # the typical gain of a fresh random matrix, below its spectral radius


def test_repeated_matrix_explodes_where_distinct_ones_do_not():
    result = repeated_vs_distinct(size=32, depth=100, rho=1.1, seed=0)
    assert result["repeated"][-1] > 1e3  # about 1.1^100 ≈ 1.4e4 times the share along the top eigenvector
    assert result["repeated"][-1] > 100 * result["distinct"][-1]


# --- ‖∂h_T/∂h_t‖ in real cells -----------------------------------------------------------------------------


def _reference_jacobian_norms(module: nn.Module, x: torch.Tensor) -> np.ndarray:
    """‖∂h_T/∂h_t‖₂ by torch.autograd.functional.jacobian of torch.nn's module rerun from h_t (c_t fixed)."""
    reference = getattr(nn, type(module).__name__)(module.input_size, module.hidden_size, dtype=torch.float64)
    reference.load_state_dict(module.state_dict())
    with torch.no_grad():
        _, states = zip(*[reference(x[: t + 1].unsqueeze(1)) for t in range(len(x))], strict=True)
    norms = []
    for t in range(len(x)):
        state = states[t]

        def h_T_from(h_t, t=t, state=state):
            hx = (h_t.view(1, 1, -1), state[1]) if isinstance(state, tuple) else h_t.view(1, 1, -1)
            if t == len(x) - 1:
                return h_t
            _, final = reference(x[t + 1 :].unsqueeze(1), hx)
            return (final[0] if isinstance(final, tuple) else final).view(-1)

        h_t = (state[0] if isinstance(state, tuple) else state).view(-1)
        J = torch.autograd.functional.jacobian(h_T_from, h_t)
        norms.append(torch.linalg.matrix_norm(J, ord=2).item())
    return np.array(norms[::-1])  # index = distance T − t


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_state_jacobian_norms_match_autograd_jacobians_of_torch_nn(name):
    torch.manual_seed(0)
    module = getattr(rtorch, name)(3, 5, dtype=torch.float64)
    x = torch.randn(12, 3, dtype=torch.float64)
    norms = state_jacobian_norms(module, x)
    assert norms.shape == (12,)
    assert norms[0] == pytest.approx(1.0)  # ∂h_T/∂h_T = I
    np.testing.assert_allclose(norms, _reference_jacobian_norms(module, x), rtol=1e-9)


def test_gradient_norms_of_the_rnn_match_numpy_bptt():
    """The same weights and inputs: Jacobians from rnnlib.numpy's rnn_backward, one backward pass per t."""
    from rnnlib.numpy import params_from_torch, rnn_backward, rnn_forward

    T, D, H, seed = 30, 4, 6, 2
    norms = gradient_norms("rnn", hidden_size=H, seq_len=T, input_size=D, seed=seed)
    torch.manual_seed(seed)  # gradient_norms draws the module, then the inputs, under this seed
    params = params_from_torch(rtorch.RNN(D, H, dtype=torch.float64))
    x = torch.randn(T, D, dtype=torch.float64).numpy()
    hs, _, _ = rnn_forward(x[:, None, :], None, params)  # (T, 1, H)
    expected = [1.0]
    for t in range(T - 2, -1, -1):  # h_T as a function of h_t: run the rest of the sequence from h_t
        rest = np.repeat(x[t + 1 :, None, :], H, axis=1)  # H copies, copy b backpropagates h_T[b]
        out, _, cache = rnn_forward(rest, np.repeat(hs[t], H, axis=0), params)
        J = rnn_backward(np.zeros_like(out), cache, dh_T=np.eye(H))["h0"]  # row b: ∂h_T[b]/∂h_t
        expected.append(np.linalg.norm(J, 2))
    np.testing.assert_allclose(norms, expected, rtol=1e-9)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_gradient_norms_shape_and_determinism(cell):
    norms = gradient_norms(cell, hidden_size=8, seq_len=20, input_size=3, seed=1)
    assert norms.shape == (20,) and norms[0] == pytest.approx(1.0)
    assert np.array_equal(norms, gradient_norms(cell, hidden_size=8, seq_len=20, input_size=3, seed=1))


def test_gradient_norms_book_claims_default_sizes():
    """The vanishing-gradients chapter: hidden 32, 100 steps, input 8, seed 0."""
    g = {cell: gradient_norms(cell, seed=0) for cell in ("rnn", "lstm", "gru")}
    for cell, norms in g.items():
        assert norms[99] < 1e-12 * norms[0], f"{cell} should vanish exponentially at initialisation"
    # at distance 50 the plain RNN is orders of magnitude below the gated cells
    assert g["rnn"][50] < 1e-2 * g["lstm"][50]
    assert g["rnn"][50] < 1e-2 * g["gru"][50]
    # a forget gate that starts nearly open (bias + 2, σ(2) ≈ 0.88) keeps the gradient alive
    open_gate = gradient_norms("lstm", seed=0, forget_bias=2.0)
    assert open_gate[50] > 1e-3 and open_gate[50] > 1e6 * g["lstm"][50]


def test_gradient_norms_rejects_bad_arguments():
    with pytest.raises(ValueError, match="cell"):
        gradient_norms("transformer")
    with pytest.raises(ValueError, match="LSTM only"):
        gradient_norms("gru", forget_bias=1.0)
    with pytest.raises(ValueError, match=r"\(T, 3\)"):
        state_jacobian_norms(rtorch.RNN(3, 4, dtype=torch.float64), torch.zeros(5, 2, dtype=torch.float64))


# --- remedies ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("skip", [1, 2, 5, 10])
def test_skip_connections_decay_as_w_to_the_tau_over_d(skip):
    tau = np.arange(101)
    norms = skip_connection_norms(0.9, 100, skip)
    np.testing.assert_allclose(norms, 0.9 ** (tau // skip), rtol=1e-12)
    # a function of τ/D only: D steps of the skip chain are one step of the plain chain
    np.testing.assert_allclose(norms[::skip], scalar_trajectory(0.9, 100 // skip), rtol=1e-12)


def test_skip_connections_reject_bad_length():
    with pytest.raises(ValueError, match="skip"):
        skip_connection_norms(0.9, 10, 0)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9, 0.99, 1.0])
def test_leaky_unit_without_input_has_closed_form(alpha):
    tau = np.arange(101)
    expected = (alpha + (1 - alpha) * 0.9) ** tau  # tanh' = 1 at h = 0: each step multiplies by α + (1 − α) w
    np.testing.assert_allclose(leaky_unit_norms(alpha, 0.9, 100), expected, rtol=1e-12)


def test_leaky_unit_with_inputs_matches_autograd():
    alpha, w, T = 0.7, 1.5, 25
    x = np.random.default_rng(0).normal(size=T)
    hs = [torch.zeros((), dtype=torch.float64, requires_grad=True)]
    for t in range(T):
        h_prev = hs[-1]
        hs.append(alpha * h_prev + (1 - alpha) * torch.tanh(w * h_prev + float(x[t])))
    grads = torch.autograd.grad(hs[-1], hs)  # ∂h_T/∂h_t for t = 0..T
    expected = np.abs([g.item() for g in grads[::-1]])
    np.testing.assert_allclose(leaky_unit_norms(alpha, w, T, inputs=x), expected, rtol=1e-12)


def test_leaky_units_decay_slower_for_alpha_near_one():
    at_50 = [leaky_unit_norms(alpha, 0.9, 50)[-1] for alpha in (0.0, 0.5, 0.9, 0.99)]
    assert at_50 == sorted(at_50) and at_50[-1] > 0.9 > 1e-2 > at_50[0]


def test_leaky_unit_rejects_bad_arguments():
    with pytest.raises(ValueError, match="alpha"):
        leaky_unit_norms(1.5, 0.9, 10)
    with pytest.raises(ValueError, match=r"\(10,\)"):
        leaky_unit_norms(0.5, 0.9, 10, inputs=np.zeros(9))


# --- plots -------------------------------------------------------------------------------------------------


def test_plot_log_trajectories_and_gradient_norms():
    fig, (left, right) = plt.subplots(1, 2)
    data = {f"W = {w}": scalar_trajectory(w, 30) for w in (0.9, 1.1)}
    assert plots.plot_log_trajectories(left, data) is left
    assert plots.plot_gradient_norms(right, {"rnn": np.array([1.0, 0.1, 0.01])}) is right
    for ax in (left, right):
        assert ax.get_yscale() == "log" and ax.get_xlabel() and ax.get_ylabel()
    np.testing.assert_array_equal(left.lines[1].get_ydata(), data["W = 1.1"])
    assert [t.get_text() for t in left.get_legend().get_texts()] == list(data)
    assert "T - t" in right.get_xlabel()
    plt.close(fig)


def test_plot_repeated_vs_distinct_draws_solid_and_dashed_lines_per_rho():
    results = {rho: repeated_vs_distinct(size=8, depth=10, rho=rho, n_trials=1) for rho in (0.9, 1.1)}
    fig, ax = plt.subplots()
    assert plots.plot_repeated_vs_distinct(ax, results) is ax
    assert [line.get_linestyle() for line in ax.lines] == ["-", "--", "-", "--"]
    np.testing.assert_array_equal(ax.lines[3].get_ydata(), results[1.1]["distinct"])
    assert ax.get_yscale() == "log" and ax.get_xlabel() and ax.get_ylabel()
    plt.close(fig)


def test_plot_learning_curves_smooths_with_a_moving_average_and_draws_the_baseline():
    losses = [4.0, 2.0, 0.0, 2.0, 4.0]
    fig, ax = plt.subplots()
    assert plots.plot_learning_curves(ax, {"rnn": losses}, baseline=1 / 6, smooth=2, log=False) is ax
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [3.0, 1.0, 1.0, 3.0])  # means of neighbouring pairs
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [2, 3, 4, 5])  # each window's last step
    assert ax.lines[1].get_ydata()[0] == pytest.approx(1 / 6) and ax.lines[1].get_linestyle() == "--"
    assert ax.get_yscale() == "linear" and ax.get_xlabel() == "training step"
    with pytest.raises(ValueError, match="smooth"):
        plots.plot_learning_curves(ax, {"rnn": losses}, smooth=0)
    with pytest.raises(ValueError, match="fewer than smooth"):
        plots.plot_learning_curves(ax, {"rnn": losses}, smooth=6)
    plt.close(fig)
