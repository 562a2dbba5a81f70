"""The cell equations of the course, written once.

Every cell first computes its *pre-activations* with one stacked matrix product in PyTorch's
layout (rows of ``weight_ih``/``weight_hh`` ordered LSTM i, f, g, o and GRU r, z, n). The functions
below then apply the gate equations of the book to those pre-activations. The same code runs on
numpy arrays (``rnnlib.numpy``) and on torch tensors (``rnnlib.torch``): the caller passes its
backend's ``sigmoid`` and ``tanh``.

Shapes: B batch, H hidden size; ``a`` is (B, G*H) with G = 1 (RNN), 4 (LSTM), 3 (GRU).
"""

from collections.abc import Callable
from typing import Any

Array = Any  # numpy.ndarray or torch.Tensor
Act = Callable[[Array], Array]


def rnn_cell(a: Array, tanh: Act) -> Array:
    """h_t = tanh(W·[h_{t-1}, x_t] + b).  a: (B, H) -> h_t: (B, H)."""
    return tanh(a)


def lstm_cell(a: Array, c_prev: Array, sigmoid: Act, tanh: Act) -> tuple[Array, Array, tuple]:
    """LSTM gates from pre-activations a: (B, 4H) in order i, f, g, o; c_prev: (B, H).

    Returns h_t, c_t (both (B, H)) and the gates (i_t, f_t, c̃_t, o_t) for backpropagation.
    """
    H = c_prev.shape[-1]
    i_t = sigmoid(a[..., 0 * H : 1 * H])  # input gate: how much of the candidate to write
    f_t = sigmoid(a[..., 1 * H : 2 * H])  # forget gate: how much of the old cell state to keep
    c_tilde = tanh(a[..., 2 * H : 3 * H])  # candidate c̃_t (PyTorch calls it g)
    o_t = sigmoid(a[..., 3 * H : 4 * H])  # output gate: how much of the cell state to show
    c_t = f_t * c_prev + i_t * c_tilde  # the conveyor belt: keep some, add some
    h_t = o_t * tanh(c_t)  # short-term memory, the cell's output
    return h_t, c_t, (i_t, f_t, c_tilde, o_t)


def gru_cell(a_x: Array, a_h: Array, h_prev: Array, sigmoid: Act, tanh: Act) -> tuple[Array, tuple]:
    """GRU gates from a_x = W_ih x_t + b_ih and a_h = W_hh h_{t-1} + b_hh, both (B, 3H) in order r, z, n.

    Returns h_t (B, H) and the gates (r_t, z_t, h̃_t) for backpropagation. PyTorch's convention:
    the reset gate multiplies the recurrent term (W_hn h_{t-1} + b_hn), and z_t keeps the old state.
    """
    H = h_prev.shape[-1]
    r_t = sigmoid(a_x[..., 0 * H : 1 * H] + a_h[..., 0 * H : 1 * H])  # reset gate
    z_t = sigmoid(a_x[..., 1 * H : 2 * H] + a_h[..., 1 * H : 2 * H])  # update gate
    h_tilde = tanh(a_x[..., 2 * H : 3 * H] + r_t * a_h[..., 2 * H : 3 * H])  # candidate h̃_t
    h_t = (1 - z_t) * h_tilde + z_t * h_prev  # moving average of candidates, weight z_t on the past
    return h_t, (r_t, z_t, h_tilde)
