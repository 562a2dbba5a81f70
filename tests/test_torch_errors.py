"""rnnlib.torch raises what torch.nn raises: the same exception type and message, case by case.

Each case is run on torch.nn and on rnnlib.torch; torch.nn's exception is the expected one.
"""

import numpy as np
import pytest
import torch
from torch import nn

import rnnlib.torch as rtorch


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global random state (torch and numpy's legacy generator)."""
    torch.manual_seed(0)
    np.random.seed(0)


torch.set_num_threads(1)

# name, constructor args, constructor kwargs
BAD_CONSTRUCTORS = [
    ("LSTM", (3, 4), {"bias": 0}),
    ("GRU", (3, 4), {"batch_first": "False"}),
    ("RNN", (3.0, 4), {}),
    ("LSTM", (3, 4.0), {}),
    ("GRU", (0, 4), {}),
    ("RNN", (3, 0), {}),
    ("LSTM", (3, 4), {"num_layers": 0}),
    ("LSTM", (3, 4), {"num_layers": 1.5}),
    ("GRU", (3, 4), {"dropout": 1.5}),
    ("RNN", (3, 4), {"dropout": True}),
    ("LSTM", (3, 4), {"proj_size": 4}),
    ("LSTM", (3, 4), {"proj_size": -1}),
    ("RNN", (3, 4), {"nonlinearity": "sigmoid"}),
    ("LSTMCell", (3, -1), {}),
]


def outcome(fn) -> tuple[type, str] | None:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the exception itself is what we compare
        return type(e), str(e)
    return None


@pytest.mark.parametrize("name, args, kwargs", BAD_CONSTRUCTORS)
def test_bad_constructor_arguments_raise_like_torch(name, args, kwargs):
    expected = outcome(lambda: getattr(nn, name)(*args, **kwargs))
    assert expected is not None, "torch.nn accepts this: not a bad-argument case"
    assert outcome(lambda: getattr(rtorch, name)(*args, **kwargs)) == expected


def test_dropout_with_one_layer_warns_like_torch():
    for lib in (nn, rtorch):
        with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
            lib.GRU(3, 4, dropout=0.5)


def z(*shape):
    return torch.zeros(*shape)


# name, constructor kwargs, input, hx  (networks: num_layers=2, input_size 3, hidden 4)
BAD_CALLS = [
    ("LSTM", {}, z(6, 2, 5), None),  # input_size
    ("GRU", {}, z(6, 2, 1, 3), None),  # 4-D input
    ("RNN", {}, z(6, 2, 1, 3), None),
    ("LSTM", {}, z(6, 2, 1, 3), None),
    ("RNN", {}, z(6, 2, 3).double(), None),  # dtype
    ("LSTM", {}, z(6, 2, 3), (z(1, 2, 4), z(2, 2, 4))),  # h_0 size
    ("LSTM", {}, z(6, 2, 3), (z(2, 2, 4), z(2, 2, 3))),  # c_0 size
    ("LSTM", {}, z(6, 2, 3), (z(2, 4), z(2, 2, 4))),  # h_0 dims
    ("LSTM", {}, z(6, 3), (z(2, 2, 4), z(2, 2, 4))),  # unbatched input, batched hx
    ("LSTM", {}, z(6, 2, 3), z(2, 2, 4)),  # a tensor for (h, c)
    ("GRU", {}, z(6, 2, 3), z(1, 2, 4)),
    ("GRU", {}, z(6, 2, 3), z(2, 4)),
    ("RNN", {}, z(6, 3), z(2, 2, 4)),
    ("GRU", {"bidirectional": True}, z(6, 2, 3), z(2, 2, 4)),  # needs 2·2 layers of state
    ("LSTM", {"proj_size": 2}, z(6, 2, 3), (z(2, 2, 4), z(2, 2, 4))),  # h_0 has proj_size columns
    ("RNN", {}, z(0, 2, 3), None),  # length-0 sequence
    ("LSTM", {"batch_first": True}, z(2, 0, 3), None),
    ("RNNCell", {}, z(5, 2), None),
    ("GRUCell", {}, z(1, 5, 3), None),
    ("LSTMCell", {}, z(5, 3), (z(4, 4), z(5, 4))),
    ("LSTMCell", {}, z(5, 3), (z(5, 3), z(5, 4))),
    ("LSTMCell", {}, z(5, 3), (z(5, 4), z(5, 3))),
    ("LSTMCell", {}, z(5, 3), (z(5, 4), z(1, 5, 4))),
    ("GRUCell", {}, z(5, 3), z(5, 3)),
    ("RNNCell", {}, z(5, 3), z(1, 5, 4)),
    ("GRUCell", {}, z(5, 3).double(), None),
    ("RNNCell", {"nonlinearity": "sigmoid"}, z(5, 3), None),  # torch.nn.RNNCell checks it only here
]


@pytest.mark.parametrize("name, kwargs, x, hx", BAD_CALLS)
def test_bad_inputs_raise_like_torch(name, kwargs, x, hx):
    layers = {} if name.endswith("Cell") else {"num_layers": 2}
    torch.manual_seed(0)
    ref = getattr(nn, name)(3, 4, **layers, **kwargs)
    ours = getattr(rtorch, name)(3, 4, **layers, **kwargs)
    expected = outcome(lambda: ref(x, hx))
    assert expected is not None, "torch.nn accepts this: not a bad-input case"
    got = outcome(lambda: ours(x, hx))
    assert got is not None and got[0] is expected[0], (got, expected)
    if "mat1 and mat2" not in expected[1]:  # a matmul's own dtype message: its wording is the kernel's
        assert got == expected


def test_empty_batch_and_zero_hidden_cells_work_like_torch():
    torch.manual_seed(0)
    for name in ("RNN", "LSTM", "GRU"):
        out, _ = getattr(rtorch, name)(3, 4)(z(5, 0, 3))
        assert out.shape == getattr(nn, name)(3, 4)(z(5, 0, 3))[0].shape == (5, 0, 4)
    for name in ("RNNCell", "LSTMCell", "GRUCell"):
        ours, ref = getattr(rtorch, name)(3, 0), getattr(nn, name)(3, 0)
        assert [p.shape for p in ours.parameters()] == [p.shape for p in ref.parameters()]
        x = torch.randn(2, 3)
        got, want = ours(x), ref(x)
        got, want = (got, want) if name == "LSTMCell" else ((got,), (want,))
        assert [t.shape for t in got] == [t.shape for t in want] == [(2, 0)] * len(want)
