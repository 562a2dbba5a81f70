"""Drop-in replacements for torch.nn.RNN/LSTM/GRU and their cells, with an explicit time loop.

Same constructor arguments, parameter names, shapes, initialisation, return values and errors as torch.nn, so
``ours.load_state_dict(theirs.state_dict())`` works both ways. The difference is that you can read the
forward pass: per layer and direction, one matrix product projects the inputs of all time steps at once,
then a Python loop (``_scan``) applies one recurrent matrix product and the cell equations of
``rnnlib.equations`` per step.

Supported, as in torch.nn: every constructor argument of the six modules (``num_layers``, ``nonlinearity``,
``bias``, ``batch_first``, inter-layer ``dropout`` read at forward time and applied in train mode only,
``bidirectional`` with its ``*_reverse`` parameters, LSTM ``proj_size`` with ``weight_hr_l{l}``, ``device``,
``dtype``); batched, unbatched and PackedSequence input (output packed the same way); ``all_weights``,
``_flat_weights``, ``_flat_weights_names`` and ``flatten_parameters()`` (a no-op: there is no cuDNN
buffer, every parameter stays its own tensor); cells with ``hidden_size=0``; torch's exception types and
messages for bad arguments and shapes (a length-0 sequence raises torch's RuntimeError).
Not reproduced: torch's TorchScript overloads and cuDNN's random dropout masks (ours are F.dropout's).

Speed: for padded input without projection, each layer and direction runs as one autograd Function
(``_Recurrence``): its forward *is* the readable loop; its backward is backpropagation through time written
out as in ``rnnlib.numpy`` (one matrix product per step, weight gradients of all steps at once). Second
derivatives (``create_graph=True``) recompute the loop under autograd, so they are exact too.
PackedSequence input, ``proj_size`` and torch.func transforms (grad, vmap) run the same loop under plain
autograd.

Shapes: T time steps, B batch, D input size, H hidden size, P proj_size (H when 0), L layers, G gates
(RNN 1, LSTM 4, GRU 3). Parameters of layer l (``_reverse`` for the backward direction), PyTorch's layout,
gates stacked LSTM i, f, g, o and GRU r, z, n: ``weight_ih_l{l}`` (G·H, D for l = 0, else P·directions),
``weight_hh_l{l}`` (G·H, P), ``bias_ih_l{l}`` and ``bias_hh_l{l}`` (G·H,), ``weight_hr_l{l}`` (P, H).
The cells use the same names without the suffix.
"""

import math
import numbers
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from rnnlib.equations import gru_cell, lstm_cell, rnn_cell

__all__ = [
    "RNN",
    "LSTM",
    "GRU",
    "RNNCell",
    "LSTMCell",
    "GRUCell",
    "RNNBase",
    "RNNCellBase",
    "MODULES",
    "network",
    "add_forget_bias",
]

_NUM_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}
State = tuple[Tensor, ...]  # (h,) for RNN and GRU, (h, c) for LSTM
HX = Tensor | tuple[Tensor, Tensor] | None  # what forward accepts: h, or (h, c) for LSTM
Weights = tuple[Tensor, Tensor | None, Tensor | None]  # weight_hh, bias_hh, weight_hr of one layer


_NUMPY_FLOATS = (torch.float32, torch.float64)


def _tanh(x: Tensor) -> Tensor:
    """tanh(x). A plain float CPU tensor outside autograd goes through NumPy's kernel, on the same memory:
    torch's CPU tanh takes several times as long at the loop's sizes (``bench/lstm_speed.py`` prints both),
    and the LSTM's step calls it twice. Anything else (autograd, CUDA, other dtypes, subclasses): torch's."""
    if (type(x) is Tensor and x.is_cpu and not x.requires_grad and x.dtype in _NUMPY_FLOATS
            and not torch._C._are_functorch_transforms_active()):  # fmt: skip
        return torch.from_numpy(np.tanh(x.numpy()))
    return torch.tanh(x)


def _rnn_mode(nonlinearity: str) -> str:
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
    return f"RNN_{nonlinearity.upper()}"


class _RecurrentBase(nn.Module):
    """The initialisation and the one-step update shared by all six modules. Subclasses set ``mode``."""

    mode: str  # "RNN_TANH", "RNN_RELU", "LSTM" or "GRU" (torch.nn's names)

    def reset_parameters(self) -> None:
        """Every weight and bias ~ uniform(-1/√H, 1/√H), drawn in registration order like torch.nn."""
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _step(
        self, a_x: Tensor, state: State, weight_hh: Tensor, bias_hh: Tensor | None, weight_hr: Tensor | None
    ) -> tuple[State, tuple]:
        """One time step from a_x = W_ih x_t + b_ih (+ b_hh but for the GRU): (B, G·H) and the state
        (h_{t-1},) or (h_{t-1}, c_{t-1}); bias_hh is the GRU's b_hh (None for the others, see ``_project``).

        Returns the new state (h_t,) or (h_t, c_t), and what the step's backward needs (``_Recurrence``).
        """
        if self.mode == "GRU":
            a_h = F.linear(state[0], weight_hh, bias_hh)  # W_hh h_{t-1} + b_hh: (B, 3H)
            h_t, gates = gru_cell(a_x, a_h, state[0], torch.sigmoid, _tanh)
            return (h_t,), (*gates, a_h[..., 2 * self.hidden_size :])
        a = torch.addmm(a_x, state[0], weight_hh.T)  # a_t = W_ih x_t + b_ih + b_hh + W_hh h_{t-1}: (B, G·H)
        if self.mode == "LSTM":
            h_t, c_t, gates = lstm_cell(a, state[1], torch.sigmoid, _tanh)
            if weight_hr is not None:
                h_t = F.linear(h_t, weight_hr)  # projection h_t = W_hr (o_t ⊙ tanh(c_t)): (B, P)
            return (h_t, c_t), (*gates, c_t)
        if self.mode not in ("RNN_TANH", "RNN_RELU"):  # torch.nn.RNNCell, too, only finds out here
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        return (rnn_cell(a, torch.relu if self.mode == "RNN_RELU" else _tanh),), ()

    def _project(
        self, x: Tensor, weight_ih: Tensor, bias_ih: Tensor | None, bias_hh: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """W_ih x_t + b_ih for all rows of x at once: (N, D) -> (N, G·H), and the bias left for ``_step``.

        Both biases add to the same pre-activation but the GRU's b_hn (in r_t ⊙ (W_hn h + b_hn)), so the
        RNN and LSTM add b_hh here, once for all steps, and the GRU keeps it for the step.
        """
        if self.mode == "GRU" or bias_ih is None:
            return F.linear(x, weight_ih, bias_ih), bias_hh
        return F.linear(x, weight_ih, bias_ih + bias_hh), None

    def _result(self, state: State) -> Tensor | State:
        """What torch.nn returns for a state: (h, c) for LSTM, h otherwise."""
        return state if self.mode == "LSTM" else state[0]


class RNNBase(_RecurrentBase):
    """A stack of ``num_layers`` recurrent layers run over a whole sequence, torch.nn.RNNBase's role."""

    def __init__(
        self,
        mode: str,
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
        super().__init__()
        _check_arguments(input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size)
        self.mode = mode
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.proj_size = bidirectional, proj_size
        gate_size, real_hidden_size = _NUM_GATES[mode] * hidden_size, proj_size or hidden_size
        directions = 2 if bidirectional else 1
        self._flat_weights_names: list[str] = []
        self._all_weights: list[list[str]] = []
        for layer in range(num_layers):
            for direction in range(directions):
                shapes = {
                    "weight_ih": (gate_size, input_size if layer == 0 else real_hidden_size * directions),
                    "weight_hh": (gate_size, real_hidden_size),
                }
                if bias:
                    shapes |= {"bias_ih": (gate_size,), "bias_hh": (gate_size,)}
                if proj_size > 0:
                    shapes["weight_hr"] = (proj_size, hidden_size)
                names = []
                for name, shape in shapes.items():
                    names.append(f"{name}_l{layer}{'_reverse' if direction else ''}")
                    self.register_parameter(
                        names[-1], nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
                    )
                self._flat_weights_names += names
                self._all_weights.append(names)
        self.reset_parameters()

    @property
    def _flat_weights(self) -> list[Tensor | None]:
        """The parameters in torch.nn's flat order, read afresh (so a re-assigned weight is seen)."""
        return [getattr(self, name, None) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[Tensor]]:
        """Per layer and direction, [weight_ih, weight_hh, bias_ih, bias_hh, weight_hr] as present."""
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """A no-op, as torch.nn's is off cuDNN: the loop reads every parameter as its own tensor."""

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s

    def forward(self, input: Tensor | PackedSequence, hx: HX = None):
        """input: (T, B, D), or (B, T, D) if batch_first, or (T, D) unbatched, or a PackedSequence;
        hx: (L·directions, B, P), or without B for unbatched input, a pair (h_0, c_0) for LSTM (c_0 has H
        columns); None means zeros.

        Returns the output (T, B, P·directions), the top layer's h_t for every t (batch-first, unbatched or
        packed as the input was), and the final state h_n (L·directions, B, P) (LSTM: (h_n, c_n)).
        """
        packed = isinstance(input, PackedSequence)
        if packed:
            x, batch_sizes, sorted_indices, unsorted_indices = input  # x: (Σ b_t, D), step after step
            steps, batched = batch_sizes.tolist(), True
        else:
            x, batched = self._unpack_input(input, hx)
            steps = [x.shape[1]] * x.shape[0]
        self._check_input(x, packed)
        B = int(batch_sizes[0]) if packed else x.shape[1]
        hx = self._initial_state(hx, x, B, batched, sorted_indices if packed else None)
        if not packed:
            T = x.shape[0]
            if T == 0:
                raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
            x = x.reshape(T * B, x.shape[2])  # (T·B, D): the rows of all steps, one step after another

        directions = 2 if self.bidirectional else 1
        layer_input, final_states = x, []
        for l in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                names = self._all_weights[l * directions + direction]
                w = {name.split("_l")[0]: getattr(self, name) for name in names}
                # W_ih x_t + b_ih for every t: one matrix product over all rows, (Σ b_t, G·H)
                a_x, bias_hh = self._project(layer_input, w["weight_ih"], w.get("bias_ih"), w.get("bias_hh"))
                state = tuple(s[l * directions + direction] for s in hx)  # (h_0,) or (h_0, c_0)
                weights = (w["weight_hh"], bias_hh, w.get("weight_hr"))
                hs, final = self._layer(a_x, steps, state, weights, reverse=direction == 1, packed=packed)
                outputs.append(hs)
                final_states.append(final)
            layer_input = torch.cat(outputs, dim=1) if directions == 2 else outputs[0]  # (Σ b_t, P·dirs)
            if l < self.num_layers - 1 and self.dropout > 0:
                layer_input = F.dropout(layer_input, self.dropout, self.training)

        # the last state of every layer and direction: (h_n,) or (h_n, c_n), each (L·directions, B, ·)
        h_n = tuple(torch.stack(s) for s in zip(*final_states, strict=True))
        if packed:
            if unsorted_indices is not None:
                h_n = tuple(s.index_select(1, unsorted_indices) for s in h_n)
            output = PackedSequence(layer_input, batch_sizes, sorted_indices, unsorted_indices)
            return output, self._result(h_n)
        output = layer_input.view(T, B, layer_input.shape[1])
        if not batched:
            output, h_n = output.squeeze(1), tuple(s.squeeze(1) for s in h_n)
        elif self.batch_first:
            output = output.transpose(0, 1)
        return output, self._result(h_n)

    def _layer(
        self, a_x: Tensor, steps: list[int], state: State, weights: Weights, reverse: bool, packed: bool
    ) -> tuple[Tensor, State]:
        """One layer in one direction over a_x: (Σ b_t, G·H). Returns all h_t, (Σ b_t, P), and the final
        state. A padded batch without projection runs as one ``_Recurrence``; the rest under autograd."""
        if packed:
            hs, final = self._scan(a_x.split(steps), state, weights, reverse)
            return torch.cat(hs), final
        a_x = a_x.view(len(steps), steps[0], a_x.shape[1])  # (T, B, G·H)
        # torch.func's transforms (grad, vmap, jacrev) would need a Function written for them: plain autograd
        if weights[2] is None and not torch._C._are_functorch_transforms_active():
            hs, *final = _Recurrence.apply(self, reverse, a_x, *weights[:2], *state)
        else:
            hs, final = self._scan(a_x, state, weights, reverse)
            hs = torch.stack(hs)
        return hs.flatten(0, 1), tuple(final)

    def _scan(
        self, a_x, state: State, weights: Weights, reverse: bool = False, caches: list | None = None
    ) -> tuple[list[Tensor], State]:
        """The time loop of one layer in one direction.

        a_x[t] = W_ih x_t + b_ih: (b_t, G·H) for each step t, where b_t sequences are still running: b_t = B
        for a padded batch; non-increasing for a packed one (longest sequences first). state: (h_0,) or
        (h_0, c_0), each (B, ·). Returns h_t (b_t, P) for every t and the final state of every sequence
        (B, ·). ``caches`` (a list of T entries) receives what each step's backward needs.
        """
        if isinstance(a_x, Tensor):
            a_x = a_x.unbind(0)  # T views in one call: indexing a tuple costs far less than a tensor
        T = len(a_x)
        hs: list = [None] * T
        initial, ended = state, []  # ended: last states of the sequences that stopped early, latest last
        state = tuple(s[: a_x[T - 1 if reverse else 0].shape[0]] for s in state)
        for t in reversed(range(T)) if reverse else range(T):
            a_t = a_x[t]
            b, running = a_t.shape[0], state[0].shape[0]
            if b < running:  # forward in time: sequences b.. have ended, keep their last state
                ended.append(tuple(s[b:] for s in state))
                state = tuple(s[:b] for s in state)
            elif b > running:  # backward in time: sequences running..b start here, from their initial state
                state = tuple(torch.cat([s, s0[running:b]]) for s, s0 in zip(state, initial, strict=True))
            state, cache = self._step(a_t, state, *weights)
            hs[t] = state[0]
            if caches is not None:
                caches[t] = cache
        if ended:
            state = tuple(torch.cat(parts) for parts in zip(state, *reversed(ended), strict=True))
        return hs, state

    def _unpack_input(self, input: Tensor, hx: HX) -> tuple[Tensor, bool]:
        """input as (T, B, D), and whether it was batched; hx's dimensions checked like torch.nn."""
        if input.dim() not in (2, 3):
            tensor = " tensor" if self.mode.startswith("RNN") else ""
            raise ValueError(
                f"{self._name}: Expected input to be 2D or 3D, got {input.dim()}D{tensor} instead"
            )
        batched = input.dim() == 3
        if hx is not None:
            dims = [hx[0].dim(), hx[1].dim()] if self.mode == "LSTM" else [hx.dim()]
            want = 3 if batched else 2
            if any(d != want for d in dims):
                what = "hx and cx" if self.mode == "LSTM" else "hx"
                got = f"({dims[0]}-D, {dims[1]}-D) tensors" if self.mode == "LSTM" else f"{dims[0]}-D tensor"
                kind = "batched 3-D" if batched else "unbatched 2-D"
                raise RuntimeError(f"For {kind} input, {what} should also be {want}-D but got {got}")
        if not batched:
            return input.unsqueeze(1), False  # (T, 1, D)
        return (input.transpose(0, 1) if self.batch_first else input), True

    @property
    def _name(self) -> str:
        return {"RNN_TANH": "RNN", "RNN_RELU": "RNN"}.get(self.mode, self.mode)

    def _check_input(self, x: Tensor, packed: bool) -> None:
        """torch.nn.RNNBase.check_input: the dtype, dimensions and input_size of x."""
        weight_dtype = self.weight_ih_l0.dtype
        if x.dtype != weight_dtype and not torch.is_autocast_enabled():
            raise ValueError(
                f"RNN input dtype ({x.dtype}) does not match weight dtype ({weight_dtype}). Convert input: "
                f"input.to({weight_dtype}), or convert model: model.to({x.dtype})"
            )
        if x.dim() != (2 if packed else 3):
            raise RuntimeError(f"input must have {2 if packed else 3} dimensions, got {x.dim()}")
        if x.shape[-1] != self.input_size:
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, got {x.shape[-1]}"
            )

    def _initial_state(
        self, hx: HX, x: Tensor, B: int, batched: bool, sorted_indices: Tensor | None
    ) -> State:
        """hx (zeros if None) checked against torch.nn's sizes, as (h,) or (h, c), each (L·dirs, B, ·)."""
        layers = self.num_layers * (2 if self.bidirectional else 1)
        sizes = [self.proj_size or self.hidden_size] + ([self.hidden_size] if self.mode == "LSTM" else [])
        if hx is None:
            return tuple(x.new_zeros(layers, B, size) for size in sizes)
        state = (hx[0], hx[1]) if self.mode == "LSTM" else (hx,)
        if not batched:
            state = tuple(s.unsqueeze(1) for s in state)
        for i, (s, size) in enumerate(zip(state, sizes, strict=True)):
            expected = (layers, B, size)
            if s.shape != expected:
                label = f"hidden[{i}] size" if self.mode == "LSTM" else "hidden size"
                raise RuntimeError(f"Expected {label} {expected}, got {list(s.shape)}")
        if sorted_indices is not None:  # hx follows the user's order of sequences, the packed data another
            state = tuple(s.index_select(1, sorted_indices) for s in state)
        return state


def _check_arguments(input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size) -> None:
    """torch.nn.RNNBase's checks of the constructor arguments, with its exception types and messages."""
    if not isinstance(dropout, numbers.Number) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
        raise ValueError(
            "dropout should be a number in range [0, 1] representing the probability of an element "
            "being zeroed"
        )
    if dropout > 0 and num_layers == 1:
        warnings.warn(
            "dropout option adds dropout after all but last recurrent layer, so non-zero dropout expects "
            f"num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
            stacklevel=4,
        )
    for name, value, kind in [("bias", bias, bool), ("batch_first", batch_first, bool)]:
        if not isinstance(value, kind):
            raise TypeError(f"{name} should be of type bool, got: {type(value).__name__}")
    for name, value in [("input_size", input_size), ("hidden_size", hidden_size)]:
        if not isinstance(value, int):
            raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
        if value <= 0:
            raise ValueError(f"{name} must be greater than zero")
    if num_layers <= 0:
        raise ValueError("num_layers must be greater than zero")
    if proj_size < 0:
        raise ValueError("proj_size should be a positive integer or zero to disable projections")
    if proj_size >= hidden_size:
        raise ValueError("proj_size has to be smaller than hidden_size")


class _Recurrence(torch.autograd.Function):
    """One layer in one direction of a padded batch: forward is ``RNNBase._scan`` (the readable loop),
    backward is backpropagation through time as in ``rnnlib.numpy`` (one matrix product per step).

    Inputs a_x (T, B, G·H), weight_hh, bias_hh (or None), then h_0 (and c_0), each (B, H).
    Outputs hs (T, B, H) and the final state.
    """

    @staticmethod
    def forward(ctx, module: RNNBase, reverse: bool, a_x: Tensor, weight_hh, bias_hh, *state):
        caches = [None] * len(a_x) if any(ctx.needs_input_grad) else None  # none kept for inference
        hs, final = module._scan(a_x, state, (weight_hh, bias_hh, None), reverse, caches)
        hs = torch.stack(hs)
        ctx.module, ctx.reverse, ctx.caches = module, reverse, caches
        ctx.save_for_backward(a_x, weight_hh, bias_hh, hs, *state)
        return (hs, *final)

    @staticmethod
    def backward(ctx, dhs: Tensor, *d_final: Tensor):
        a_x, weight_hh, bias_hh, hs, *state = ctx.saved_tensors
        inputs = (a_x, weight_hh, bias_hh, *state)
        if torch.is_grad_enabled():  # create_graph=True: differentiate the loop itself, twice if need be
            return (None, None, *_autograd_backward(ctx, inputs, (dhs, *d_final)))
        caches, reverse = ctx.caches, ctx.reverse
        if reverse:  # the backward direction ran t = T-1 .. 0: flip time, so "previous" means t - 1 again
            dhs, hs, caches = dhs.flip(0), hs.flip(0), caches[::-1]
        h_prev = torch.cat([state[0][None], hs[:-1]])  # h_{t-1} for every t: (T, B, H)
        bptt = {"LSTM": _lstm_bptt, "GRU": _gru_bptt}.get(ctx.module.mode, _rnn_bptt)
        da_x, da_h, d_state = bptt(ctx.module.mode, dhs, d_final, hs, h_prev, state, caches, weight_hh)
        if reverse:
            da_x = da_x.flip(0)
        T, B, GH = da_h.shape
        d_weight_hh = da_h.reshape(T * B, GH).T @ h_prev.reshape(T * B, -1)  # all steps at once
        d_bias_hh = None if bias_hh is None else da_h.sum((0, 1))
        return (None, None, da_x, d_weight_hh, d_bias_hh, *d_state)


def _autograd_backward(ctx, inputs: tuple, grads: tuple) -> list[Tensor | None]:
    """Gradients of ``_Recurrence`` by re-running the loop under autograd (differentiable again)."""
    a_x, weight_hh, bias_hh, *state = inputs
    with torch.enable_grad():
        hs, final = ctx.module._scan(a_x, tuple(state), (weight_hh, bias_hh, None), ctx.reverse)
        outputs = (torch.stack(hs), *final)
    wanted = [t is not None and ctx.needs_input_grad[i + 2] for i, t in enumerate(inputs)]
    found = iter(
        torch.autograd.grad(
            outputs, [t for t, w in zip(inputs, wanted, strict=True) if w], grads,
            create_graph=True, allow_unused=True,
        )
    )  # fmt: skip
    return [next(found) if w else None for w in wanted]


def _rnn_bptt(mode, dhs, d_final, hs, h_prev, state, caches, weight_hh):
    """h_t = tanh(a_t) (or relu): da_t = (dL/dh_t) ⊙ tanh'(a_t), and dL/dh_{t-1} = da_t W_hh."""
    slope = 1 - hs * hs if mode == "RNN_TANH" else (hs > 0).to(hs.dtype)  # tanh' = 1 − h², relu' = [h > 0]
    da, dh = torch.empty_like(hs), d_final[0]
    for t in reversed(range(len(hs))):
        torch.mul(dhs[t] + dh, slope[t], out=da[t])
        dh = da[t] @ weight_hh
    return da, da, (dh,)


def _lstm_bptt(mode, dhs, d_final, hs, h_prev, state, caches, weight_hh):
    """The LSTM's step derivatives for all t at once, then the loop that carries dL/dh and dL/dc back."""
    i, f, g, o, c = (torch.stack(gate) for gate in zip(*caches, strict=True))  # each (T, B, H)
    T, B, H = c.shape
    c_prev = torch.cat([state[1][None], c[:-1]])
    tanh_c = _tanh(c)
    dc_dh = torch.addcmul(o, o * tanh_c, tanh_c, value=-1)  # h_t = o_t ⊙ tanh(c_t): ∂c/∂h = o (1 − tanh²c)
    # dL/da_t = [dc ⊙ c̃ i(1−i), dc ⊙ c_{t−1} f(1−f), dc ⊙ i (1−c̃²), dh ⊙ tanh(c_t) o(1−o)]: the factors
    local = hs.new_empty(T, B, 4, H)  # gate k's factor in local[:, :, k]
    torch.mul(g, torch.addcmul(i, i, i, value=-1), out=local[:, :, 0])
    torch.mul(c_prev, torch.addcmul(f, f, f, value=-1), out=local[:, :, 1])
    torch.addcmul(i, i * g, g, value=-1, out=local[:, :, 2])
    torch.mul(tanh_c, torch.addcmul(o, o, o, value=-1), out=local[:, :, 3])
    da = hs.new_empty(T, B, 4, H)
    # per-step views, taken once (one unbind call; indexing in the loop costs as much as the arithmetic)
    da_ifg, da_o, da_t = da[:, :, :3].unbind(0), da[:, :, 3].unbind(0), da.view(T, B, 4 * H).unbind(0)
    local_ifg, local_o = local[:, :, :3].unbind(0), local[:, :, 3].unbind(0)
    dhs_t, dc_dh_t, f_t = dhs.unbind(0), dc_dh.unbind(0), f.unbind(0)
    dh, dc = dhs_t[T - 1] + d_final[0], d_final[1]  # dL/dh_t: from the output at t and from step t + 1
    for t in reversed(range(T)):
        dc = torch.addcmul(dc, dh, dc_dh_t[t])
        torch.mul(local_ifg[t], dc.unsqueeze(1), out=da_ifg[t])  # i, f, g: through c_t
        torch.mul(local_o[t], dh, out=da_o[t])  # o: through h_t
        dc = dc * f_t[t]  # the cell state's path to c_{t−1}: only the forget gate scales it
        dh = torch.addmm(dhs_t[t - 1], da_t[t], weight_hh) if t else da_t[t] @ weight_hh
    da = da.view(T, B, 4 * H)
    return da, da, (dh, dc)


def _gru_bptt(mode, dhs, d_final, hs, h_prev, state, caches, weight_hh):
    """The GRU's step derivatives for all t at once, then the loop that carries dL/dh back."""
    r, z, n, a_hn = (torch.stack(x) for x in zip(*caches, strict=True))  # each (T, B, H)
    dn_da = (1 - z) * (1 - n * n)  # h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t−1}, n_t = tanh(a_xn + r_t ⊙ a_hn)
    dr_da = a_hn * r * (1 - r)
    dz_da = (h_prev - n) * z * (1 - z)
    H = hs.shape[-1]
    da_h, da_n, dh = hs.new_empty(*hs.shape[:2], 3 * H), torch.empty_like(hs), d_final[0]
    for t in reversed(range(len(hs))):
        dh = dhs[t] + dh
        dan = torch.mul(dh, dn_da[t], out=da_n[t])
        torch.mul(dan, dr_da[t], out=da_h[t, :, :H])
        torch.mul(dh, dz_da[t], out=da_h[t, :, H : 2 * H])
        torch.mul(dan, r[t], out=da_h[t, :, 2 * H :])
        dh = torch.addmm(dh * z[t], da_h[t], weight_hh)
    da_x = torch.cat([da_h[..., : 2 * H], da_n], dim=-1)  # r and z act on the sum of both pre-activations
    return da_x, da_h, (dh,)


class RNN(RNNBase):
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
        self.nonlinearity = nonlinearity
        super().__init__(_rnn_mode(nonlinearity), input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, 0, device, dtype)  # fmt: skip


class LSTM(RNNBase):
    """Long short-term memory, gates i, f, g (= c̃), o stacked in that order, like torch.nn.LSTM."""

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
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device, dtype)  # fmt: skip


class GRU(RNNBase):
    """Gated recurrent unit, gates r, z, n stacked in that order, like torch.nn.GRU (same signature)."""

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
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, device, dtype)  # fmt: skip


class RNNCellBase(_RecurrentBase):
    """One time step of a recurrent layer, torch.nn.RNNCellBase's role."""

    def __init__(
        self, mode: str, input_size: int, hidden_size: int, bias: bool, device=None, dtype=None
    ) -> None:
        super().__init__()
        self.mode, self.input_size, self.hidden_size, self.bias = mode, input_size, hidden_size, bias
        gate_size = _NUM_GATES.get(mode, 1) * hidden_size
        kw = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty((gate_size, input_size), **kw))
        self.weight_hh = nn.Parameter(torch.empty((gate_size, hidden_size), **kw))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(gate_size, **kw))
            self.bias_hh = nn.Parameter(torch.empty(gate_size, **kw))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s

    def forward(self, input: Tensor, hx: HX = None) -> Tensor | State:
        """input: (B, D) or (D,) unbatched; hx: (B, H) or (H,) (LSTM: a pair (h, c)); None means zeros.

        Returns h' (B, H) (LSTM: (h', c')), like torch.nn.
        """
        name = type(self).__name__
        if input.dim() not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None:
            state = (hx[0], hx[1]) if self.mode == "LSTM" else (hx,)
            for i, s in enumerate(state):
                if s.dim() not in (1, 2):
                    label = f"hx[{i}]" if self.mode == "LSTM" else "hidden"
                    raise ValueError(f"{name}: Expected {label} to be 1D or 2D, got {s.dim()}D instead")
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)  # (B, D)
        if hx is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_size)
            state = (zeros, zeros) if self.mode == "LSTM" else (zeros,)
        elif not batched:
            state = tuple(s.unsqueeze(0) for s in state)
        self._check_step(x, state)

        a_x, bias_hh = self._project(x, self.weight_ih, self.bias_ih, self.bias_hh)
        state, _ = self._step(a_x, state, self.weight_hh, bias_hh, None)
        if not batched:
            state = tuple(s.squeeze(0) for s in state)
        return self._result(state)

    def _check_step(self, x: Tensor, state: State) -> None:
        """The sizes torch's cell kernels check, with their RuntimeError messages."""
        if x.shape[1] != self.input_size:
            raise RuntimeError(
                f"input has inconsistent input_size: got {x.shape[1]} expected {self.input_size}"
            )
        for i, s in enumerate(state):
            if s.shape[0] != x.shape[0]:
                raise RuntimeError(
                    f"Input batch size {x.shape[0]} doesn't match hidden{i} batch size {s.shape[0]}"
                )
            if s.shape[1] != self.hidden_size:
                raise RuntimeError(
                    f"hidden{i} has inconsistent hidden_size: got {s.shape[1]}, expected {self.hidden_size}"
                )


class RNNCell(RNNCellBase):
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
        self.nonlinearity = nonlinearity  # checked at forward time, like torch.nn.RNNCell
        super().__init__(f"RNN_{str(nonlinearity).upper()}", input_size, hidden_size, bias, device, dtype)


class LSTMCell(RNNCellBase):
    """One LSTM step, (h', c') from (x, (h, c)), like torch.nn.LSTMCell (same signature)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__("LSTM", input_size, hidden_size, bias, device, dtype)


class GRUCell(RNNCellBase):
    """One GRU step, h' from (x, h), like torch.nn.GRUCell (same signature)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__("GRU", input_size, hidden_size, bias, device, dtype)


MODULES = {"rnn": RNN, "lstm": LSTM, "gru": GRU}  # the course's names for the three networks


def network(cell: str, *args, forget_bias: float = 0.0, **kwargs) -> RNNBase:
    """The network MODULES[cell] ("rnn", "lstm" or "gru") built with torch.nn's arguments, its forget-gate
    bias raised by ``forget_bias`` (LSTM only, see ``add_forget_bias``)."""
    if cell not in MODULES:
        raise ValueError(f"cell must be one of {sorted(MODULES)}, got {cell!r}")
    if forget_bias != 0 and cell != "lstm":
        raise ValueError(f"forget_bias applies to the LSTM only, got cell={cell!r}")
    module = MODULES[cell](*args, **kwargs)
    if forget_bias:
        add_forget_bias(module, forget_bias)
    return module


def add_forget_bias(lstm: nn.Module, value: float) -> None:
    """Add ``value`` to the forget gate's bias b_if (rows H..2H of every bias_ih, gate order i, f, g, o) of an
    LSTM or LSTMCell (rnnlib.torch or torch.nn): the gate starts more open, σ(value) instead of σ(0)."""
    biases = [p for name, p in lstm.named_parameters() if name.startswith("bias_ih")]
    if not biases:
        raise ValueError("add_forget_bias: the module has no bias_ih (built with bias=False?)")
    H = lstm.hidden_size
    with torch.no_grad():
        for bias in biases:
            bias[H : 2 * H] += value
