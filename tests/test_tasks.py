"""rnnlib.tasks: the generators against their definitions, the baselines against closed forms and Monte-Carlo
estimates, SequenceModel against torch.nn, the trainer on an easy case, and the errors for bad input."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnlib.tasks import (
    ADDING_BASELINE_MSE,
    STOP_WINDOW,
    SequenceModel,
    adding_problem,
    copy_baseline_loss,
    copy_task,
    evaluate,
    loss_fn,
    train,
)


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global random state (torch and numpy's legacy generator)."""
    torch.manual_seed(0)
    np.random.seed(0)


# ---------------------------------------------------------------------------------------------- adding


@pytest.mark.parametrize("n_samples, seq_len", [(1, 2), (7, 3), (200, 50)])
def test_adding_problem_definition(n_samples, seq_len):
    x, y = adding_problem(n_samples, seq_len, seed=3)
    assert x.shape == (seq_len, n_samples, 2) and x.dtype == torch.float32
    assert y.shape == (n_samples,) and y.dtype == torch.float32
    values, markers = x[..., 0].numpy(), x[..., 1].numpy()
    assert ((values >= 0) & (values < 1)).all()
    assert set(np.unique(markers)) <= {0.0, 1.0}
    half = seq_len // 2
    for n in range(n_samples):
        marked = np.flatnonzero(markers[:, n])
        assert len(marked) == 2, f"sample {n}: markers at {marked}"
        assert marked[0] < half <= marked[1], f"sample {n}: markers at {marked}, halves split at {half}"
        assert y[n].item() == pytest.approx(values[marked[0], n] + values[marked[1], n], abs=1e-6)


def test_adding_problem_is_seeded():
    a, b, c = adding_problem(50, 20, seed=0), adding_problem(50, 20, seed=0), adding_problem(50, 20, seed=1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    state = torch.get_rng_state()
    adding_problem(5, 10, seed=0)
    assert torch.equal(state, torch.get_rng_state()), "the generator must not consume the global RNG"


def test_adding_marker_positions_cover_each_half_uniformly():
    seq_len, n = 10, 20_000
    x, _ = adding_problem(n, seq_len, seed=0)
    counts = x[..., 1].sum(dim=1).numpy()  # markers per time step
    expected = n / (seq_len // 2)  # each half: one marker per sample spread over T/2 steps
    assert np.all(np.abs(counts - expected) < 5 * math.sqrt(expected)), counts


def test_adding_baseline_is_the_mse_of_predicting_one():
    # closed form: u1 + u2 with u ~ U(0, 1) has mean 1 and variance 2 · 1/12
    assert ADDING_BASELINE_MSE == pytest.approx(2 / 12)
    # Monte Carlo on the generator itself: the best constant is the mean of y, and its MSE the variance
    _, y = adding_problem(200_000, 4, seed=0)
    y = y.double().numpy()
    assert y.mean() == pytest.approx(1.0, abs=5e-3)
    assert np.mean((y - 1.0) ** 2) == pytest.approx(ADDING_BASELINE_MSE, rel=1e-2)


# ------------------------------------------------------------------------------------------------ copy


@pytest.mark.parametrize("n_samples, length, delay, n_symbols", [(1, 1, 1, 1), (9, 5, 20, 8), (4, 3, 2, 2)])
def test_copy_task_definition(n_samples, length, delay, n_symbols):
    x, y = copy_task(n_samples, length=length, delay=delay, n_symbols=n_symbols, seed=2)
    T = 2 * length + delay
    assert x.shape == (T, n_samples, n_symbols + 2) and x.dtype == torch.float32
    assert y.shape == (T, n_samples) and y.dtype == torch.int64
    assert torch.equal(x.sum(dim=-1), torch.ones(T, n_samples)), "every input step is one-hot"
    tokens = x.argmax(dim=-1)
    blank, delimiter = 0, n_symbols + 1
    symbols = tokens[:length]
    assert ((symbols >= 1) & (symbols <= n_symbols)).all()
    assert (tokens[length : length + delay - 1] == blank).all()
    assert (tokens[length + delay - 1] == delimiter).all()
    assert (tokens[length + delay :] == blank).all()
    assert (y[: length + delay] == blank).all()
    assert torch.equal(y[length + delay :], symbols), "the target repeats the symbols in their order"


def test_copy_task_is_seeded_and_uses_every_symbol():
    a, b = copy_task(100, seed=0), copy_task(100, seed=0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], copy_task(100, seed=1)[1])
    symbols = a[1][-5:]
    assert set(symbols.unique().tolist()) == set(range(1, 9))


def test_copy_baseline_is_the_loss_of_the_best_memoryless_guess():
    length, delay, n_symbols = 4, 10, 6
    x, y = copy_task(3000, length=length, delay=delay, n_symbols=n_symbols, seed=0)
    # a guess that knows the step but not the symbols: blank (near certainly) until the copy starts, then
    # uniform over the symbols
    logits = torch.full((*y.shape, n_symbols + 2), -1e4)
    logits[: length + delay, :, 0] = 0.0
    logits[length + delay :, :, 1 : n_symbols + 1] = 0.0
    loss = F.cross_entropy(logits.reshape(-1, n_symbols + 2), y.reshape(-1)).item()
    assert loss == pytest.approx(length * math.log(n_symbols) / (2 * length + delay), rel=1e-6)
    assert copy_baseline_loss(length, delay, n_symbols) == pytest.approx(loss, rel=1e-6)


# ------------------------------------------------------------------------------------------------ model


@pytest.mark.parametrize("cell, reference", [("rnn", nn.RNN), ("lstm", nn.LSTM), ("gru", nn.GRU)])
def test_sequence_model_is_a_recurrent_layer_plus_a_linear_head_on_the_last_state(cell, reference):
    T, B, D, H, C = 6, 3, 2, 5, 4
    model = SequenceModel(cell, D, H, C, seed=0)
    rnn, head = reference(D, H), nn.Linear(H, C)
    rnn.load_state_dict(model.rnn.state_dict())
    head.load_state_dict(model.head.state_dict())
    x = torch.randn(T, B, D, generator=torch.Generator().manual_seed(0))
    hs, _ = rnn(x)
    torch.testing.assert_close(model(x), head(hs[-1]))
    model.every_step = True
    torch.testing.assert_close(model(x), head(hs))


def test_sequence_model_seed_fixes_the_weights_without_touching_the_global_rng():
    state = torch.get_rng_state()
    a, b = SequenceModel("lstm", 2, 8, 1, seed=5), SequenceModel("lstm", 2, 8, 1, seed=5)
    assert torch.equal(state, torch.get_rng_state())
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    c = SequenceModel("lstm", 2, 8, 1, seed=6)
    assert not torch.equal(a.rnn.weight_hh_l0, c.rnn.weight_hh_l0)


def test_forget_bias_shifts_only_the_forget_gate():
    H = 4
    plain, shifted = (
        SequenceModel("lstm", 2, H, 1, seed=0),
        SequenceModel("lstm", 2, H, 1, seed=0, forget_bias=1.0),
    )
    diff = shifted.rnn.bias_ih_l0 - plain.rnn.bias_ih_l0
    expected = torch.zeros(4 * H)
    expected[H : 2 * H] = 1.0  # torch.nn's gate order i, f, g, o
    torch.testing.assert_close(diff, expected)
    torch.testing.assert_close(shifted.rnn.bias_hh_l0, plain.rnn.bias_hh_l0)


# ------------------------------------------------------------------------------------------------ train


def test_train_learns_the_adding_problem_on_short_sequences():
    x, y = adding_problem(1000, 6, seed=0)
    x_test, y_test = adding_problem(500, 6, seed=1)
    model = SequenceModel("gru", 2, 16, 1, seed=0)
    before = evaluate(model, x_test, y_test)
    losses = train(model, x, y, steps=200, lr=1e-2, batch_size=64, progress=False)
    after = evaluate(model, x_test, y_test)
    assert len(losses) == 200 and all(isinstance(v, float) for v in losses)
    assert after < ADDING_BASELINE_MSE / 4 < before, (before, after)
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) / 4
    # evaluate is the MSE over the whole set, computed here independently
    with torch.no_grad():
        mse = ((model(x_test).squeeze(-1) - y_test) ** 2).mean().item()
    assert after == pytest.approx(mse, rel=1e-5)


def test_train_learns_a_classification_target_on_every_step():
    x, y = copy_task(256, length=2, delay=1, n_symbols=3, seed=0)
    model = SequenceModel("lstm", 5, 16, 5, every_step=True, seed=0)
    losses = train(model, x, y, steps=150, lr=2e-2, batch_size=32, progress=False)
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])


def test_train_stops_once_the_recent_mean_loss_is_below_the_threshold():
    x, y = adding_problem(500, 4, seed=0)
    full = train(SequenceModel("gru", 2, 8, 1, seed=0), x, y, steps=150, lr=2e-2, progress=False)
    threshold = ADDING_BASELINE_MSE / 2
    window_means = np.convolve(full, np.ones(STOP_WINDOW) / STOP_WINDOW, mode="valid")
    first = int(np.flatnonzero(window_means < threshold)[0]) + STOP_WINDOW  # steps taken when it stops
    assert first < 150, "the easy case must cross the threshold within the budget"
    stopped = train(
        SequenceModel("gru", 2, 8, 1, seed=0), x, y, steps=150, lr=2e-2, progress=False, stop_below=threshold
    )
    assert stopped == full[:first]


def test_train_is_reproducible_and_shows_a_progress_bar(capsys):
    x, y = adding_problem(100, 5, seed=0)
    runs = [train(SequenceModel("rnn", 2, 4, 1, seed=0), x, y, steps=5, batch_size=10) for _ in range(2)]
    assert runs[0] == runs[1]
    err = capsys.readouterr().err
    assert "training rnn" in err and "5/5" in err
    other = train(SequenceModel("rnn", 2, 4, 1, seed=0), x, y, steps=5, batch_size=10, seed=1, progress=False)
    assert other != runs[0], "another minibatch seed draws other minibatches"
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: adding_problem(0, 10), "n_samples"),
        (lambda: adding_problem(5, 1), "seq_len"),
        (lambda: copy_task(5, length=0), "length"),
        (lambda: copy_task(5, delay=0), "delay"),
        (lambda: SequenceModel("transformer", 2, 4, 1), "cell must be one of"),
        (lambda: SequenceModel("gru", 2, 4, 1, forget_bias=1.0), "LSTM only"),
        (lambda: loss_fn(torch.zeros(4, 2), torch.zeros(4)), r"\(4, 2\).*\(4,\)"),
        (lambda: loss_fn(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long)), "class dimension"),
    ],
)
def test_bad_input_raises_a_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_train_wants_per_step_targets_for_an_every_step_model():
    x, y = copy_task(10, length=2, delay=1, n_symbols=3, seed=0)  # y: (T, N)
    model = SequenceModel("gru", 5, 4, 5, every_step=True, seed=0)
    with pytest.raises(ValueError, match=r"\(T, N, \.\.\.\) for a model with every_step"):
        train(model, x, y[0], steps=1, batch_size=5, progress=False)  # one target per sequence: wrong
    with pytest.raises(ValueError, match=r"y: \(N, \.\.\.\)"):
        train(SequenceModel("gru", 5, 4, 5, seed=0), x, y, steps=1, batch_size=5, progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(x=torch.zeros(5, 10), y=torch.zeros(10)), r"x: \(T, N, D\)"),
        (dict(y=torch.zeros(9)), r"same N.*\(5, 10, 2\).*\(9,\)"),
        (dict(y=torch.zeros(())), r"same N"),
        (dict(steps=0), "steps"),
        (dict(batch_size=11), "batch_size"),
        (dict(optimizer="lbfgs"), "optimizer"),
    ],
)
def test_train_rejects_bad_input(kwargs, match):
    args = dict(
        model=SequenceModel("rnn", 2, 4, 1, seed=0),
        x=torch.zeros(5, 10, 2),
        y=torch.zeros(10),
        steps=3,
        batch_size=5,
    )
    with pytest.raises(ValueError, match=match):
        train(**(args | kwargs), progress=False)
