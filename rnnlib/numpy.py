"""The numpy reference: RNN, LSTM and GRU forward passes and backpropagation through time.

Parameters are a dict in PyTorch's single-layer layout, gates stacked in the order LSTM i, f, g, o and
GRU r, z, n (G = 1, 4, 3 gates; D input size, H hidden size)::

    weight_ih (G·H, D)   weight_hh (G·H, H)   bias_ih (G·H,)   bias_hh (G·H,)

A forward pass makes one matrix product for the inputs of all time steps, then one per step for the
recurrent term, and applies the gate equations of ``rnnlib.equations``. The backward pass runs the steps
in reverse, keeps one matrix product per step (the gradient flowing to h_{t-1}), and forms the weight
gradients of all steps at once at the end. Cells are sequences of length one. A bidirectional layer
(``bidirectional_forward``/``bidirectional_backward``) is two of these, one run on x reversed in time.

Shapes: x (T, B, D), hidden and cell states (B, H), all hidden states hs (T, B, H).
"""

import numpy as np

from rnnlib import equations

Params = dict[str, np.ndarray]
Grads = dict[str, np.ndarray]
Cache = dict

NUM_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
GATE_NAMES = {  # the book's per-gate form: each W acts on [h_{t-1}, x_t], in PyTorch's stacking order
    "rnn": ("h",),
    "lstm": ("i", "f", "c", "o"),
    "gru": ("r", "z", "h"),
}

__all__ = [
    "sigmoid",
    "tanh",
    "dsigmoid",
    "dtanh",
    "init_params",
    "params_from_torch",
    "split_gates",
    "stack_gates",
    "rnn_cell_forward",
    "rnn_cell_backward",
    "lstm_cell_forward",
    "lstm_cell_backward",
    "gru_cell_forward",
    "gru_cell_backward",
    "rnn_forward",
    "rnn_backward",
    "lstm_forward",
    "lstm_backward",
    "gru_forward",
    "gru_backward",
    "bidirectional_forward",
    "bidirectional_backward",
    "numerical_gradient",
    "rel_error",
]


# --- activations -------------------------------------------------------------------------------------------


def _float_array(x) -> np.ndarray:
    """x as a float array (float32/float64 kept, integers become float64); rejects complex and objects."""
    x = np.asarray(x)
    if x.dtype.kind in "biu":
        return x.astype(np.float64)
    if x.dtype.kind != "f":
        raise ValueError(f"expected a real floating-point array, got dtype {x.dtype}")
    return x


def sigmoid(x) -> np.ndarray:
    """σ(x) = 1 / (1 + e^{-x}), element-wise. Exact for large |x|: e^{-x} = inf gives 0, never a warning."""
    with np.errstate(over="ignore"):
        return _sigmoid(_float_array(x))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """σ of a float array, for callers inside ``np.errstate(over="ignore")`` (the loops below enter it once
    per sequence, not once per gate and step: it costs as much as the arithmetic at these sizes)."""
    out = np.negative(x, out=np.empty_like(x))  # out= keeps 0-d input an array for the in-place steps
    np.exp(out, out=out)
    out += 1.0
    return np.reciprocal(out, out=out)


def tanh(x) -> np.ndarray:
    """tanh(x), element-wise (bounded in (-1, 1) for every x)."""
    return np.tanh(_float_array(x))


def dsigmoid(x) -> np.ndarray:
    """dσ/dx = σ(x)(1 − σ(x)), element-wise."""
    s = sigmoid(x)
    return s * (1.0 - s)


def dtanh(x) -> np.ndarray:
    """d tanh/dx = 1 − tanh(x)², element-wise."""
    t = tanh(x)
    return 1.0 - t * t


# --- parameters --------------------------------------------------------------------------------------------


def _check_mode(mode: str) -> int:
    if mode not in NUM_GATES:
        raise ValueError(f"mode must be one of {list(NUM_GATES)}, got {mode!r}")
    return NUM_GATES[mode]


def init_params(
    mode: str, input_size: int, hidden_size: int, seed: int = 0, dtype: type = np.float64
) -> Params:
    """Parameters in PyTorch's layout, each entry ~ uniform(-1/√H, 1/√H) as torch.nn initialises them."""
    G = _check_mode(mode)
    if input_size <= 0 or hidden_size <= 0:
        raise ValueError(f"input_size and hidden_size must be positive, got {input_size}, {hidden_size}")
    rng = np.random.default_rng(seed)
    k = 1.0 / np.sqrt(hidden_size)
    shapes = _param_shapes(G, input_size, hidden_size)
    return {name: rng.uniform(-k, k, shapes[name]).astype(dtype) for name in PARAM_NAMES}


def _param_shapes(G: int, D: int, H: int) -> dict[str, tuple[int, ...]]:
    return {"weight_ih": (G * H, D), "weight_hh": (G * H, H), "bias_ih": (G * H,), "bias_hh": (G * H,)}


def params_from_torch(module_or_state_dict, layer: int = 0, reverse: bool = False) -> Params:
    """float64 numpy copies of one layer of a torch.nn (or rnnlib.torch) RNN/LSTM/GRU or cell.

    Reads ``weight_ih_l{layer}`` etc. (``weight_ih_l{layer}_reverse`` etc. with ``reverse``, the backward
    direction of a bidirectional module), or ``weight_ih`` etc. for a cell; a module built with bias=False
    gets zero biases.
    """
    state = module_or_state_dict
    if hasattr(state, "state_dict"):
        state = state.state_dict()
    direction = "_reverse" if reverse else ""
    suffix = f"_l{layer}{direction}" if f"weight_ih_l{layer}{direction}" in state else ""
    if "weight_ih" + suffix not in state:
        raise ValueError(
            f"no weights for layer {layer}: expected 'weight_ih_l{layer}' (or 'weight_ih' for a "
            f"cell) among the keys {sorted(state)}"
        )
    params = {
        name: state[name + suffix].detach().cpu().double().numpy().copy()
        for name in PARAM_NAMES
        if name + suffix in state
    }
    for name in ("bias_ih", "bias_hh"):
        params.setdefault(name, np.zeros(params["weight_hh"].shape[0]))
    return params


def split_gates(params: Params, mode: str) -> dict[str, np.ndarray]:
    """PyTorch's stacked layout -> the book's per-gate form σ(W·[h_{t-1}, x_t] + b).

    Each gate k gets W_k = [W_hk, W_ik] of shape (H, H + D) and b_k = b_ik + b_hk. The GRU candidate is the
    exception, as PyTorch applies r_t to (W_hn h_{t-1} + b_hn): W_h = [W_hn, W_in], b_h = b_in, and b_hn
    stays separate.
    """
    G = _check_mode(mode)
    D, H = _check_params(params, G)
    gates = {}
    for k, name in enumerate(GATE_NAMES[mode]):
        rows = slice(k * H, (k + 1) * H)
        gates[f"W_{name}"] = np.concatenate([params["weight_hh"][rows], params["weight_ih"][rows]], axis=1)
        gates[f"b_{name}"] = params["bias_ih"][rows] + params["bias_hh"][rows]
    if mode == "gru":
        gates["b_h"] = params["bias_ih"][2 * H :].copy()
        gates["b_hn"] = params["bias_hh"][2 * H :].copy()
    return gates


def stack_gates(gates: dict[str, np.ndarray], mode: str) -> Params:
    """The book's per-gate form -> PyTorch's layout (inverse of ``split_gates`` for the forward pass).

    The summed bias b_k goes to bias_ih; bias_hh is zero except the GRU's n block, which holds b_hn.
    """
    G = _check_mode(mode)
    expected = {f"{p}_{name}" for name in GATE_NAMES[mode] for p in "Wb"} | (
        {"b_hn"} if mode == "gru" else set()
    )
    if set(gates) != expected:
        raise ValueError(f"{mode} gates: expected keys {sorted(expected)}, got {sorted(gates)}")
    W = [np.asarray(gates[f"W_{name}"], dtype=np.float64) for name in GATE_NAMES[mode]]
    H = W[0].shape[0]
    for name, w in zip(GATE_NAMES[mode], W, strict=True):
        if w.ndim != 2 or w.shape[0] != H or w.shape[1] <= H or w.shape != W[0].shape:
            raise ValueError(f"W_{name}: expected shape (H, H + D) = {W[0].shape} with D ≥ 1, got {w.shape}")
    params = {
        "weight_ih": np.concatenate([w[:, H:] for w in W]),
        "weight_hh": np.concatenate([w[:, :H] for w in W]),
        "bias_ih": np.concatenate(
            [np.asarray(gates[f"b_{name}"], dtype=np.float64) for name in GATE_NAMES[mode]]
        ),
        "bias_hh": np.zeros(G * H),
    }
    if mode == "gru":
        params["bias_hh"][2 * H :] = gates["b_hn"]
    _check_params(params, G)
    return params


# --- input checks ------------------------------------------------------------------------------------------


def _check_params(params: Params, G: int) -> tuple[int, int]:
    """Validate keys, shapes and values of PyTorch-layout params; returns (D, H)."""
    if not isinstance(params, dict) or set(params) != set(PARAM_NAMES):
        keys = sorted(params) if isinstance(params, dict) else type(params).__name__
        hint = (
            " (per-gate W_*/b_* found: convert with stack_gates)"
            if isinstance(params, dict) and any(str(k).startswith("W_") for k in params)
            else ""
        )
        raise ValueError(f"params: expected the keys {list(PARAM_NAMES)}, got {keys}{hint}")
    W_hh = np.asarray(params["weight_hh"])
    if W_hh.ndim != 2 or W_hh.shape[0] != G * W_hh.shape[1]:
        raise ValueError(f"weight_hh: expected shape ({G}·H, H) for {G} gate(s), got {W_hh.shape}")
    H = W_hh.shape[1]
    W_ih = np.asarray(params["weight_ih"])
    if W_ih.ndim != 2 or W_ih.shape[0] != G * H:
        raise ValueError(f"weight_ih: expected shape ({G * H}, D), got {W_ih.shape}")
    D = W_ih.shape[1]
    for name, shape in _param_shapes(G, D, H).items():
        value = _float_array(params[name])
        if value.shape != shape:
            raise ValueError(f"{name}: expected shape {shape}, got {value.shape}")
        if not np.isfinite(value).all():
            raise ValueError(f"{name} contains NaN or inf")
    return D, H


def _check_array(name: str, value, shape: tuple[int, ...]) -> np.ndarray:
    value = _float_array(value)
    if value.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {value.shape}")
    if not np.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or inf")
    return value


def _prepare(mode: str, x, params: Params, states: dict) -> tuple[np.ndarray, list[np.ndarray], Params]:
    """Checked x (T, B, D), initial states (zeros where None) and params, all in one float dtype."""
    D, H = _check_params(params, NUM_GATES[mode])
    x = _float_array(x)
    if x.ndim != 3 or x.shape[2] != D or x.shape[0] == 0:
        raise ValueError(f"x: expected shape (T, B, D) with T ≥ 1 and D = {D}, got {x.shape}")
    B = x.shape[1]
    x = _check_array("x", x, x.shape)
    dtype = np.result_type(x, *params.values())
    ready = [
        np.zeros((B, H), dtype) if s is None else _check_array(name, s, (B, H)) for name, s in states.items()
    ]
    return (
        x.astype(dtype, copy=False),
        [s.astype(dtype, copy=False) for s in ready],
        {k: np.asarray(v, dtype=dtype) for k, v in params.items()},
    )


def _input_projection(x: np.ndarray, params: Params, bias: np.ndarray) -> np.ndarray:
    """W_ih x_t + bias for all time steps in one matrix product: (T, B, D) -> (T, B, G·H)."""
    T, B, D = x.shape
    a_x = x.reshape(T * B, D) @ params["weight_ih"].T
    a_x += bias  # in place: a second (T·B, G·H) array would cost more than the matrix product
    return a_x.reshape(T, B, -1)


def _param_grads(
    x: np.ndarray, h_prevs: np.ndarray, da_x: np.ndarray, da_h: np.ndarray, params: Params
) -> Grads:
    """Gradients of all steps at once from da_x = dL/d(W_ih x_t + b_ih) and da_h = dL/d(W_hh h_{t-1} + b_hh).

    x (T, B, D), h_prevs (T, B, H) = h_{t-1} for each t, da_x and da_h (T, B, G·H).
    """
    T, B, D = x.shape
    da_x2, da_h2 = da_x.reshape(T * B, -1), da_h.reshape(T * B, -1)
    return {
        "x": (da_x2 @ params["weight_ih"]).reshape(T, B, D),
        "weight_ih": da_x2.T @ x.reshape(T * B, D),
        "weight_hh": da_h2.T @ h_prevs.reshape(T * B, -1),
        "bias_ih": da_x2.sum(axis=0),
        "bias_hh": da_h2.sum(axis=0),
    }


def _upstream(dhs, cache: Cache, name: str = "dhs") -> np.ndarray:
    return _check_array(name, dhs, cache["hs"].shape).astype(cache["hs"].dtype, copy=False)


def _final(value, cache: Cache, name: str) -> np.ndarray:
    shape = cache["hs"].shape[1:]
    return np.zeros(shape, cache["hs"].dtype) if value is None else _check_array(name, value, shape)


# --- vanilla RNN -------------------------------------------------------------------------------------------
#
# Memory is the cost to watch: a fresh (B, G·H) array per step, or a fresh (T, B, H) array per local
# derivative, costs more than the matrix products on a small machine. So the forward pass writes each step's
# recurrent product into one reused buffer and adds it to the input projection in place, which leaves the
# pre-activations of every step in the cache; the backward pass recomputes a step's gates from them (cheap)
# instead of keeping T sets of gates alive.


def _previous(first: np.ndarray, states: np.ndarray) -> np.ndarray:
    """The state before each step: (first, s_1, ..., s_{T-1}), shape (T, B, H)."""
    return np.concatenate([first[None], states[:-1]])


def rnn_forward(x, h0, params: Params) -> tuple[np.ndarray, np.ndarray, Cache]:
    """h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh) over a sequence.

    x: (T, B, D), h0: (B, H) or None (zeros). Returns hs (T, B, H), h_T (B, H) and the cache for backward.
    """
    x, (h,), params = _prepare("rnn", x, params, {"h0": h0})
    a = _input_projection(x, params, params["bias_ih"] + params["bias_hh"])
    hs = np.empty((x.shape[0], *h.shape), x.dtype)
    h0, W_hh_T, recurrent = h, np.ascontiguousarray(params["weight_hh"].T), np.empty_like(a[0])
    for t in range(x.shape[0]):
        a[t] += np.matmul(h, W_hh_T, out=recurrent)  # a_t = W_ih x_t + b + W_hh h_{t-1}
        h = hs[t] = equations.rnn_cell(a[t], np.tanh)
    return hs, h, {"x": x, "h0": h0, "hs": hs, "params": params}


def rnn_backward(dhs, cache: Cache, dh_T=None) -> Grads:
    """Backpropagation through time. dhs: (T, B, H) = dL/dh_t from above; dh_T: (B, H) = dL/dh_T, optional.

    Returns gradients for x (T, B, D), h0 (B, H) and every parameter.
    """
    dhs, hs, W_hh = _upstream(dhs, cache), cache["hs"], cache["params"]["weight_hh"]
    da = np.empty_like(hs)
    dh = _final(dh_T, cache, "dh_T")
    for t in reversed(range(len(hs))):
        da[t] = (dhs[t] + dh) * (1.0 - hs[t] * hs[t])  # tanh'(a_t) = 1 − h_t²
        dh = da[t] @ W_hh
    h_prevs = _previous(cache["h0"], hs)
    return {**_param_grads(cache["x"], h_prevs, da, da, cache["params"]), "h0": dh}


# --- LSTM --------------------------------------------------------------------------------------------------


def lstm_forward(x, h0, c0, params: Params) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], Cache]:
    """The LSTM over a sequence (gates i, f, g, o as in ``rnnlib.equations.lstm_cell``).

    x: (T, B, D), h0 and c0: (B, H) or None (zeros). Returns hs (T, B, H), (h_T, c_T) and the cache.
    """
    x, (h, c), params = _prepare("lstm", x, params, {"h0": h0, "c0": c0})
    a = _input_projection(x, params, params["bias_ih"] + params["bias_hh"])
    T = x.shape[0]
    hs, cs = np.empty((T, *h.shape), x.dtype), np.empty((T, *h.shape), x.dtype)
    h0, c0, W_hh_T, recurrent = h, c, np.ascontiguousarray(params["weight_hh"].T), np.empty_like(a[0])
    with np.errstate(over="ignore"):  # for _sigmoid
        for t in range(T):
            a[t] += np.matmul(h, W_hh_T, out=recurrent)  # a_t = W_ih x_t + b + W_hh h_{t-1}, gates i, f, g, o
            h, c, _ = equations.lstm_cell(a[t], c, _sigmoid, np.tanh)
            hs[t], cs[t] = h, c
    return hs, (h, c), {"x": x, "h0": h0, "c0": c0, "a": a, "hs": hs, "cs": cs, "params": params}


def lstm_backward(dhs, cache: Cache, dh_T=None, dc_T=None) -> Grads:
    """Backpropagation through time. dhs: (T, B, H) = dL/dh_t; dh_T, dc_T: (B, H) = dL/dh_T, dL/dc_T.

    Returns gradients for x (T, B, D), h0 and c0 (B, H) and every parameter.
    """
    dhs, hs, cs, W_hh = _upstream(dhs, cache), cache["hs"], cache["cs"], cache["params"]["weight_hh"]
    T, B, H = hs.shape
    da = np.empty((T, B, 4 * H), hs.dtype)
    dh, dc = _final(dh_T, cache, "dh_T"), _final(dc_T, cache, "dc_T")
    with np.errstate(over="ignore"):  # for _sigmoid
        for t in reversed(range(T)):
            c_prev = cs[t - 1] if t > 0 else cache["c0"]
            # this step's gates, recomputed from its pre-activations
            _, _, (i, f, g, o) = equations.lstm_cell(cache["a"][t], c_prev, _sigmoid, np.tanh)
            tanh_c = np.tanh(cs[t])
            dh = dhs[t] + dh
            dc = dc + dh * o * (1.0 - tanh_c * tanh_c)  # h_t = o_t ⊙ tanh(c_t)
            da[t, :, 0 * H : 1 * H] = dc * g * i * (1.0 - i)  # c_t = f_t ⊙ c_{t-1} + i_t ⊙ c̃_t, i_t = σ(a_i)
            da[t, :, 1 * H : 2 * H] = dc * c_prev * f * (1.0 - f)  # f_t = σ(a_f)
            da[t, :, 2 * H : 3 * H] = dc * i * (1.0 - g * g)  # c̃_t = tanh(a_g)
            da[t, :, 3 * H : 4 * H] = dh * tanh_c * o * (1.0 - o)  # o_t = σ(a_o)
            dc = dc * f  # the cell state's path to c_{t-1}: only the forget gate scales it
            dh = da[t] @ W_hh
    h_prevs = _previous(cache["h0"], hs)
    return {**_param_grads(cache["x"], h_prevs, da, da, cache["params"]), "h0": dh, "c0": dc}


# --- GRU ---------------------------------------------------------------------------------------------------


def gru_forward(x, h0, params: Params) -> tuple[np.ndarray, np.ndarray, Cache]:
    """The GRU over a sequence (gates r, z, n as in ``rnnlib.equations.gru_cell``).

    x: (T, B, D), h0: (B, H) or None (zeros). Returns hs (T, B, H), h_T (B, H) and the cache.
    """
    x, (h,), params = _prepare("gru", x, params, {"h0": h0})
    a_x = _input_projection(x, params, params["bias_ih"])
    hs = np.empty((x.shape[0], *h.shape), x.dtype)
    h0, W_hh_T, a_h = h, np.ascontiguousarray(params["weight_hh"].T), np.empty_like(a_x[0])
    with np.errstate(over="ignore"):  # for _sigmoid
        for t in range(x.shape[0]):
            np.matmul(h, W_hh_T, out=a_h)  # W_hh h_{t-1} + b_hh, in one buffer for all steps
            a_h += params["bias_hh"]
            h, _ = equations.gru_cell(a_x[t], a_h, h, _sigmoid, np.tanh)
            hs[t] = h
    return hs, h, {"x": x, "h0": h0, "a_x": a_x, "hs": hs, "params": params}


def gru_backward(dhs, cache: Cache, dh_T=None) -> Grads:
    """Backpropagation through time. dhs: (T, B, H) = dL/dh_t; dh_T: (B, H) = dL/dh_T, optional.

    Returns gradients for x (T, B, D), h0 (B, H) and every parameter.
    """
    dhs, hs, params = _upstream(dhs, cache), cache["hs"], cache["params"]
    T, B, H = hs.shape
    h_prevs = _previous(cache["h0"], hs)
    da_x, da_h = np.empty((T, B, 3 * H), hs.dtype), np.empty((T, B, 3 * H), hs.dtype)
    dh = _final(dh_T, cache, "dh_T")
    with np.errstate(over="ignore"):  # for _sigmoid
        for t in reversed(range(T)):
            a_h = h_prevs[t] @ params["weight_hh"].T + params["bias_hh"]  # recomputed: cheaper than keeping T
            _, (r, z, n) = equations.gru_cell(cache["a_x"][t], a_h, h_prevs[t], _sigmoid, np.tanh)
            dh = dhs[t] + dh
            dan = dh * (1.0 - z) * (1.0 - n * n)  # h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t−1}, n_t = tanh(a_n)
            da_h[t, :, 0 * H : 1 * H] = dan * a_h[:, 2 * H :] * r * (1.0 - r)  # a_n = a_xn + r_t ⊙ a_hn
            da_h[t, :, 1 * H : 2 * H] = dh * (h_prevs[t] - n) * z * (1.0 - z)  # z_t = σ(a_z)
            da_h[t, :, 2 * H : 3 * H] = dan * r
            da_x[t, :, : 2 * H] = da_h[t, :, : 2 * H]  # r and z act on the sum of both pre-activations
            da_x[t, :, 2 * H :] = dan
            dh = dh * z + da_h[t] @ params["weight_hh"]
    return {**_param_grads(cache["x"], h_prevs, da_x, da_h, params), "h0": dh}


# --- bidirectional: one layer forward in time, one backward, side by side --------------------------------

_SEQUENCE = {
    "rnn": (rnn_forward, rnn_backward),
    "lstm": (lstm_forward, lstm_backward),
    "gru": (gru_forward, gru_backward),
}


def bidirectional_forward(mode: str, x, params: Params, params_reverse: Params, h0=None, c0=None):
    """A bidirectional layer as torch.nn's: ``params`` read x forward in time, ``params_reverse`` read it
    from the last step to the first, and each step's output puts the two hidden states side by side.

    x: (T, B, D); h0 and c0 (LSTM only): (2, B, H) or None (zeros), index 0 forward, 1 reverse.
    Returns hs (T, B, 2H), the final states (2, B, H) (LSTM: (h_n, c_n); the reverse direction's final
    state is the one after reading x_0) and the cache for ``bidirectional_backward``.
    """
    _check_mode(mode)
    forward = _SEQUENCE[mode][0]
    x = _float_array(x)
    runs = []
    for d, (xs, p) in enumerate([(x, params), (x[::-1], params_reverse)]):
        states = [None if s is None else np.asarray(s)[d] for s in ((h0, c0) if mode == "lstm" else (h0,))]
        hs, final, cache = forward(xs, *states, p)
        runs.append((hs, final if mode == "lstm" else (final,), cache))
    hs = np.concatenate([runs[0][0], runs[1][0][::-1]], axis=2)  # the reverse run's h_t back in time order
    final = tuple(np.stack(pair) for pair in zip(runs[0][1], runs[1][1], strict=True))
    return hs, final if mode == "lstm" else final[0], {"mode": mode, "caches": [r[2] for r in runs]}


def bidirectional_backward(dhs, cache: Cache, dh_n=None, dc_n=None) -> Grads:
    """Gradients of ``bidirectional_forward``. dhs: (T, B, 2H); dh_n, dc_n: (2, B, H) or None.

    Returns x (T, B, D), h0 (2, B, H) (and c0 for the LSTM), each parameter of the forward direction under
    its name and of the reverse direction under its name + "_reverse" (torch.nn's naming).
    """
    mode, caches = cache["mode"], cache["caches"]
    backward = _SEQUENCE[mode][1]
    dhs = np.asarray(dhs)
    H = caches[0]["hs"].shape[2]
    grads = []
    for d, upstream in enumerate([dhs[..., :H], dhs[::-1, :, H:]]):  # the reverse run saw time reversed
        finals = {"dh_T": None if dh_n is None else np.asarray(dh_n)[d]}
        if mode == "lstm":
            finals["dc_T"] = None if dc_n is None else np.asarray(dc_n)[d]
        grads.append(backward(upstream, caches[d], **finals))
    forward_grads, reverse_grads = grads
    result = {"x": forward_grads.pop("x") + reverse_grads.pop("x")[::-1]}
    for state in ("h0", "c0") if mode == "lstm" else ("h0",):
        result[state] = np.stack([forward_grads.pop(state), reverse_grads.pop(state)])
    return result | forward_grads | {name + "_reverse": g for name, g in reverse_grads.items()}


# --- cells: sequences of length one ------------------------------------------------------------------------


def _cell_input(x_t) -> np.ndarray:
    x_t = _float_array(x_t)
    if x_t.ndim != 2:
        raise ValueError(f"x_t: expected shape (B, D), got {x_t.shape}")
    return x_t[None]


def _cell_grads(grads: Grads) -> Grads:
    """Sequence gradients of a length-one sequence, renamed for a cell: x (B, D), h_prev, c_prev."""
    renamed = {"x": grads.pop("x")[0], "h_prev": grads.pop("h0")}
    if "c0" in grads:
        renamed["c_prev"] = grads.pop("c0")
    return renamed | grads


def rnn_cell_forward(x_t, h_prev, params: Params) -> tuple[np.ndarray, Cache]:
    """One RNN step. x_t: (B, D), h_prev: (B, H) -> h_t: (B, H) and the cache."""
    _, h_t, cache = rnn_forward(_cell_input(x_t), h_prev, params)
    return h_t, cache


def rnn_cell_backward(dh_t, cache: Cache) -> Grads:
    """Gradients of one RNN step for x, h_prev and every parameter, from dh_t: (B, H)."""
    return _cell_grads(rnn_backward(np.zeros_like(cache["hs"]), cache, dh_T=dh_t))


def lstm_cell_forward(x_t, h_prev, c_prev, params: Params) -> tuple[np.ndarray, np.ndarray, Cache]:
    """One LSTM step. x_t: (B, D), h_prev and c_prev: (B, H) -> h_t, c_t: (B, H) and the cache."""
    _, (h_t, c_t), cache = lstm_forward(_cell_input(x_t), h_prev, c_prev, params)
    return h_t, c_t, cache


def lstm_cell_backward(dh_t, dc_t, cache: Cache) -> Grads:
    """Gradients of one LSTM step for x, h_prev, c_prev and every parameter, from dh_t, dc_t: (B, H)."""
    return _cell_grads(lstm_backward(np.zeros_like(cache["hs"]), cache, dh_T=dh_t, dc_T=dc_t))


def gru_cell_forward(x_t, h_prev, params: Params) -> tuple[np.ndarray, Cache]:
    """One GRU step. x_t: (B, D), h_prev: (B, H) -> h_t: (B, H) and the cache."""
    _, h_t, cache = gru_forward(_cell_input(x_t), h_prev, params)
    return h_t, cache


def gru_cell_backward(dh_t, cache: Cache) -> Grads:
    """Gradients of one GRU step for x, h_prev and every parameter, from dh_t: (B, H)."""
    return _cell_grads(gru_backward(np.zeros_like(cache["hs"]), cache, dh_T=dh_t))


# --- gradient checking -------------------------------------------------------------------------------------


def numerical_gradient(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences (f(x + ε) − f(x − ε)) / 2ε of a scalar function f() that reads the array x.

    Each entry of x is perturbed in place and restored, so x must be a float64 array that f uses.
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.float64:
        raise ValueError(
            f"x must be a float64 numpy array perturbed in place, got {type(x).__name__} "
            f"{getattr(x, 'dtype', '')}"
        )
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        f_plus = float(f())
        x[idx] = old - eps
        f_minus = float(f())
        x[idx] = old
        grad[idx] = (f_plus - f_minus) / (2 * eps)
    return grad


def rel_error(a, b) -> float:
    """max |a − b| / max(|a| + |b|): 0 for equal arrays, about 1e-7 or less for a correct float64 gradient."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} vs {b.shape}")
    scale = np.max(np.abs(a) + np.abs(b), initial=0.0)
    return float(np.max(np.abs(a - b), initial=0.0) / max(scale, 1e-300))
