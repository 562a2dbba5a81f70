"""Drop-in replacements for torch.nn.RNN/LSTM/GRU and their cells, with an explicit time loop.

Same constructor arguments, parameter names, shapes, initialisation and return values as torch.nn, so
``ours.load_state_dict(theirs.state_dict())`` works both ways. The difference is that you can read the
forward pass: per layer, one matrix product projects the inputs of all time steps at once, then a Python
loop applies one recurrent matrix product and the cell equations of ``rnnlib.equations`` per step.

Shapes: T time steps, B batch, D input size, H hidden size, L layers, G gates (RNN 1, LSTM 4, GRU 3).
Parameters (per layer l, PyTorch's layout, gates stacked in order LSTM i, f, g, o and GRU r, z, n):
``weight_ih_l{l}`` (G·H, D for l = 0, else H), ``weight_hh_l{l}`` (G·H, H), ``bias_ih_l{l}`` and
``bias_hh_l{l}`` (G·H,). The cells use the same names without the ``_l{l}`` suffix.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from rnnlib.equations import gru_cell, lstm_cell, rnn_cell

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"]

_NUM_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}
State = tuple[Tensor, ...]  # (h,) for RNN and GRU, (h, c) for LSTM
HX = Tensor | tuple[Tensor, Tensor] | None  # what forward accepts: h, or (h, c) for LSTM


def _rnn_mode(nonlinearity: str) -> str:
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
    return f"RNN_{nonlinearity.upper()}"


class _RecurrentBase(nn.Module):
    """Parameters, initialisation, input checks and the one-step update shared by all six modules.

    ``layers`` lists (name suffix, input size) per layer: ``[("", D)]`` for a cell,
    ``[("_l0", D), ("_l1", H)]`` for a two-layer network. Parameters are registered in torch.nn's order,
    so the same seed gives the same initial weights. Subclasses set ``mode`` (torch.nn's names).
    """

    mode: str  # "RNN_TANH", "RNN_RELU", "LSTM" or "GRU"

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool, layers: list[tuple[str, int]], device, dtype
    ) -> None:
        super().__init__()
        if input_size <= 0 or hidden_size <= 0:
            raise ValueError(f"input_size and hidden_size must be positive, got {input_size}, {hidden_size}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        gate_size = _NUM_GATES[self.mode] * hidden_size
        for suffix, layer_input_size in layers:
            shapes = {"weight_ih": (gate_size, layer_input_size), "weight_hh": (gate_size, hidden_size)}
            if bias:
                shapes |= {"bias_ih": (gate_size,), "bias_hh": (gate_size,)}
            for name, shape in shapes.items():
                param = nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
                self.register_parameter(name + suffix, param)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every weight and bias ~ uniform(-1/√H, 1/√H), drawn in registration order like torch.nn."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _weights(self, suffix: str) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """(weight_ih, weight_hh, bias_ih, bias_hh) of one layer; biases are None when bias=False."""
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        return tuple(getattr(self, name + suffix, None) for name in names)  # type: ignore[return-value]

    def _step(self, a_x: Tensor, state: State, weight_hh: Tensor, bias_hh: Tensor | None) -> State:
        """One time step from a_x = W_ih x_t + b_ih: (B, G·H) and state (h_{t-1},) or (h_{t-1}, c_{t-1}).

        Returns the new state (h_t,) or (h_t, c_t), each (B, H).
        """
        a_h = F.linear(state[0], weight_hh, bias_hh)  # W_hh h_{t-1} + b_hh: (B, G·H)
        if self.mode == "LSTM":
            h_t, c_t, _ = lstm_cell(a_x + a_h, state[1], torch.sigmoid, torch.tanh)
            return h_t, c_t
        if self.mode == "GRU":
            h_t, _ = gru_cell(a_x, a_h, state[0], torch.sigmoid, torch.tanh)
            return (h_t,)
        activation = torch.relu if self.mode == "RNN_RELU" else torch.tanh
        return (rnn_cell(a_x + a_h, activation),)

    def _check_input(self, x: Tensor, dims: tuple[int, int]) -> None:
        """x must have dims[0] (unbatched) or dims[1] dimensions, the last one input_size."""
        name = type(self).__name__
        if isinstance(x, PackedSequence):
            raise NotImplementedError(f"{name}: PackedSequence input is not supported; pad the batch instead")
        if x.dim() not in dims:
            raise ValueError(f"{name}: Expected input to be {dims[0]}D or {dims[1]}D, got {x.dim()}D")
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"{name}: input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                f"got {x.shape[-1]} (input shape {tuple(x.shape)})"
            )
        weight_dtype = next(self.parameters()).dtype
        if x.dtype != weight_dtype:
            raise ValueError(f"{name}: input dtype ({x.dtype}) does not match weight dtype ({weight_dtype})")

    def _initial_state(self, hx: HX, shape: tuple[int, ...], x: Tensor, batch_dim: int | None) -> State:
        """hx (zeros if None) checked against ``shape`` and returned as (h,) or (h, c).

        batch_dim: for unbatched input, where to insert the batch dimension of size 1; None if batched.
        """
        name = type(self).__name__
        n_states = 2 if self.mode == "LSTM" else 1
        if hx is None:
            state = tuple(x.new_zeros(shape) for _ in range(n_states))
        elif self.mode == "LSTM" and not (isinstance(hx, tuple | list) and len(hx) == 2):
            raise ValueError(f"{name}: Expected hx to be a tuple (h, c), got {type(hx).__name__}")
        elif self.mode != "LSTM" and not isinstance(hx, Tensor):
            raise ValueError(f"{name}: Expected hx to be a Tensor, got {type(hx).__name__}")
        else:
            state = tuple(hx) if self.mode == "LSTM" else (hx,)
        for s, label in zip(state, ["h", "c"], strict=False):
            if tuple(s.shape) != shape:
                raise ValueError(f"{name}: Expected hx ({label}) of shape {shape}, got {tuple(s.shape)}")
        return state if batch_dim is None else tuple(s.unsqueeze(batch_dim) for s in state)

    def _result(self, state: State) -> Tensor | State:
        """What torch.nn returns for a state: (h, c) for LSTM, h otherwise."""
        return state if self.mode == "LSTM" else state[0]


class _StackedBase(_RecurrentBase):
    """A stack of ``num_layers`` recurrent layers run over a whole sequence (torch.nn.RNNBase's role)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        if dropout != 0:
            raise NotImplementedError(f"dropout={dropout} is not supported by rnnlib.torch; use dropout=0")
        if bidirectional:
            raise NotImplementedError("bidirectional=True is not supported by rnnlib.torch; use torch.nn")
        if num_layers <= 0:
            raise ValueError(f"num_layers must be greater than zero, got {num_layers}")
        layers = [(f"_l{l}", input_size if l == 0 else hidden_size) for l in range(num_layers)]
        super().__init__(input_size, hidden_size, bias, layers, device, dtype)
        self.num_layers = num_layers
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        return s

    def forward(self, x: Tensor, hx: HX = None) -> tuple[Tensor, Tensor | State]:
        """x: (T, B, D), or (B, T, D) if batch_first, or (T, D) unbatched; hx: (L, B, H), or (L, H) unbatched,
        a pair (h_0, c_0) for LSTM; None means zeros.

        Returns output (T, B, H), the top layer's h_t for every t (batch-first if the input was), and the
        final state h_n (L, B, H) (LSTM: (h_n, c_n)), like torch.nn.
        """
        self._check_input(x, (2, 3))
        batched = x.dim() == 3
        if not batched:
            x = x.unsqueeze(1)  # (T, 1, D)
        elif self.batch_first:
            x = x.transpose(0, 1)  # (B, T, D) -> (T, B, D)
        T, B, _ = x.shape
        L, H = self.num_layers, self.hidden_size
        hx = self._initial_state(hx, (L, B, H) if batched else (L, H), x, None if batched else 1)

        layer_input, final_states = x, []
        for l in range(L):
            weight_ih, weight_hh, bias_ih, bias_hh = self._weights(f"_l{l}")
            # W_ih x_t + b_ih for every t: one matrix product over all T·B rows, (T, B, G·H)
            a_x = F.linear(layer_input, weight_ih, bias_ih)
            state = tuple(s[l] for s in hx)  # this layer's (h_0,) or (h_0, c_0)
            hs = []
            for t in range(T):
                state = self._step(a_x[t], state, weight_hh, bias_hh)
                hs.append(state[0])
            layer_input = torch.stack(hs)  # (T, B, H): the next layer's input sequence
            final_states.append(state)

        output = layer_input
        # the last state of every layer, stacked: (h_n,) or (h_n, c_n), each (L, B, H)
        h_n = tuple(torch.stack(s) for s in zip(*final_states, strict=True))
        if not batched:
            output, h_n = output.squeeze(1), tuple(s.squeeze(1) for s in h_n)
        elif self.batch_first:
            output = output.transpose(0, 1)
        return output, self._result(h_n)


class RNN(_StackedBase):
    """Elman RNN, h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh) (or relu), like torch.nn.RNN."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        self.mode = _rnn_mode(nonlinearity)
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device, dtype)  # fmt: skip


class LSTM(_StackedBase):
    """Long short-term memory, gates i, f, g (= c̃), o stacked in that order, like torch.nn.LSTM."""

    mode = "LSTM"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
    ) -> None:
        if proj_size != 0:
            raise NotImplementedError(f"proj_size={proj_size} is not supported by rnnlib.torch; use 0")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device, dtype)  # fmt: skip
        self.proj_size = proj_size


class GRU(_StackedBase):
    """Gated recurrent unit, gates r, z, n stacked in that order, like torch.nn.GRU (same signature)."""

    mode = "GRU"


class _CellBase(_RecurrentBase):
    """One time step of a recurrent layer (torch.nn.RNNCellBase's role)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, bias, [("", input_size)], device, dtype)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.mode == "RNN_RELU":
            s += ", nonlinearity=relu"
        return s

    def forward(self, x: Tensor, hx: HX = None) -> Tensor | State:
        """x: (B, D) or (D,) unbatched; hx: (B, H) or (H,) (LSTM: a pair (h, c)); None means zeros.

        Returns h' (B, H) (LSTM: (h', c')), like torch.nn.
        """
        self._check_input(x, (1, 2))
        batched = x.dim() == 2
        shape = (x.shape[0], self.hidden_size) if batched else (self.hidden_size,)
        state = self._initial_state(hx, shape, x, None if batched else 0)
        if not batched:
            x = x.unsqueeze(0)  # (1, D)

        weight_ih, weight_hh, bias_ih, bias_hh = self._weights("")
        state = self._step(F.linear(x, weight_ih, bias_ih), state, weight_hh, bias_hh)
        if not batched:
            state = tuple(s.squeeze(0) for s in state)
        return self._result(state)


class RNNCell(_CellBase):
    """h' = tanh(W_ih x + b_ih + W_hh h + b_hh) (or relu), like torch.nn.RNNCell."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device=None,
        dtype=None,
    ) -> None:
        self.mode = _rnn_mode(nonlinearity)
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, device, dtype)


class LSTMCell(_CellBase):
    """One LSTM step, (h', c') from (x, (h, c)), like torch.nn.LSTMCell (same signature)."""

    mode = "LSTM"


class GRUCell(_CellBase):
    """One GRU step, h' from (x, h), like torch.nn.GRUCell (same signature)."""

    mode = "GRU"
