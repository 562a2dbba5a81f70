"""rnnlib.torch against torch.nn (the reference) and against rnnlib.numpy.

Outputs, final states and the gradients of every parameter, of the input and of the initial state must equal
torch.nn's for the same weights: to 1e-6 in float64 and 1e-5 in float32 (on the CPU; see
tests/test_torch_float32.py for float32 bounded by torch's own error against float64).
"""

import numpy as np
import pytest
import torch
from torch import nn

import rnnlib.torch as rtorch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-5}
NETWORKS = ["RNN", "LSTM", "GRU"]
CELLS = ["RNNCell", "LSTMCell", "GRUCell"]

# (T, B, D, H, constructor kwargs, pass hx); B=None means unbatched input x: (T, D).
NETWORK_CASES = [
    pytest.param(1, 1, 3, 4, {}, False, id="T1-B1"),
    pytest.param(5, 3, 3, 4, {"num_layers": 2}, True, id="2layers-hx"),
    pytest.param(4, 2, 3, 5, {"batch_first": True}, True, id="batch_first-hx"),
    pytest.param(3, 2, 2, 3, {"bias": False, "num_layers": 2}, False, id="nobias-2layers"),
    pytest.param(4, 2, 3, 4, {"bias": False, "batch_first": True}, True, id="nobias-batch_first-hx"),
    pytest.param(4, None, 3, 4, {"num_layers": 2}, True, id="unbatched-hx"),
    pytest.param(2, None, 3, 4, {"batch_first": True}, False, id="unbatched-batch_first"),
]
# (B, D, H, constructor kwargs, pass hx)
CELL_CASES = [
    pytest.param(1, 3, 4, {}, False, id="B1"),
    pytest.param(3, 3, 4, {}, True, id="hx"),
    pytest.param(2, 2, 3, {"bias": False}, True, id="nobias-hx"),
    pytest.param(None, 3, 4, {}, True, id="unbatched-hx"),
    pytest.param(None, 3, 4, {}, False, id="unbatched"),
]


@pytest.fixture(params=DEVICES)
def device(request):
    # cuDNN may use TF32 for float32 RNNs on recent GPUs; compare against full-precision float32.
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        yield torch.device(request.param)


def make_pair(name: str, *args, dtype=torch.float64, device="cpu", **kwargs) -> tuple[nn.Module, nn.Module]:
    """torch.nn's module and ours with the same (torch.nn-initialised) weights."""
    torch.manual_seed(0)
    ref = getattr(nn, name)(*args, dtype=dtype, device=device, **kwargs)
    ours = getattr(rtorch, name)(*args, dtype=dtype, device=device, **kwargs)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def flatten(result) -> list[torch.Tensor]:
    """(output, h_n), (output, (h_n, c_n)), h' or (h', c') as a flat list of tensors."""
    if isinstance(result, torch.Tensor):
        return [result]
    return [t for item in result for t in flatten(item)]


def random_like(tensors: list[torch.Tensor], seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device) for t in tensors]


def assert_parity(ref: nn.Module, ours: nn.Module, x: torch.Tensor, hx, tol: float) -> None:
    """Same forward values and same gradients of a random linear loss w.r.t. parameters, x and hx."""
    leaves = {"x": x, **{f"hx[{i}]": h for i, h in enumerate(flatten(hx) if hx is not None else [])}}
    results = {}
    for module in (ref, ours):
        inputs = {k: v.detach().clone().requires_grad_(True) for k, v in leaves.items()}
        states = [inputs[k] for k in inputs if k != "x"]
        module_hx = None if hx is None else (tuple(states) if isinstance(hx, tuple) else states[0])
        out = flatten(module(inputs["x"], module_hx))
        loss = sum((o * w).sum() for o, w in zip(out, random_like(out, seed=1), strict=True))
        wrt = {**inputs, **dict(module.named_parameters())}
        grads = torch.autograd.grad(loss, list(wrt.values()))
        results[module] = (out, dict(zip(wrt, grads, strict=True)))

    (ref_out, ref_grads), (our_out, our_grads) = results[ref], results[ours]
    assert [o.shape for o in our_out] == [o.shape for o in ref_out]
    for i, (a, b) in enumerate(zip(our_out, ref_out, strict=True)):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol, msg=lambda m, i=i: f"result {i}: {m}")
    assert our_grads.keys() == ref_grads.keys()
    for k in ref_grads:
        torch.testing.assert_close(
            our_grads[k], ref_grads[k], atol=tol, rtol=tol, msg=lambda m, k=k: f"d/d{k}: {m}"
        )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("T, B, D, H, kwargs, give_hx", NETWORK_CASES)
@pytest.mark.parametrize("name", NETWORKS)
def test_network_matches_torch(name, T, B, D, H, kwargs, give_hx, dtype, device):
    ref, ours = make_pair(name, D, H, dtype=dtype, device=device, **kwargs)
    g = torch.Generator().manual_seed(2)
    L = kwargs.get("num_layers", 1)
    if B is None:
        x_shape, h_shape = (T, D), (L, H)
    else:
        x_shape = (B, T, D) if kwargs.get("batch_first") else (T, B, D)
        h_shape = (L, B, H)
    x = torch.randn(x_shape, generator=g, dtype=dtype).to(device)
    hx = None
    if give_hx:
        hx = tuple(torch.randn(h_shape, generator=g, dtype=dtype).to(device) for _ in range(2))
        hx = hx if name == "LSTM" else hx[0]
    assert_parity(ref, ours, x, hx, TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", ["RNN", "RNNCell"])
def test_relu_rnn_matches_torch(name, dtype, device):
    ref, ours = make_pair(name, 3, 4, nonlinearity="relu", dtype=dtype, device=device)
    x = torch.randn(
        (5, 2, 3) if name == "RNN" else (2, 3), generator=torch.Generator().manual_seed(3), dtype=dtype
    )
    assert_parity(ref, ours, x.to(device), None, TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("B, D, H, kwargs, give_hx", CELL_CASES)
@pytest.mark.parametrize("name", CELLS)
def test_cell_matches_torch(name, B, D, H, kwargs, give_hx, dtype, device):
    ref, ours = make_pair(name, D, H, dtype=dtype, device=device, **kwargs)
    g = torch.Generator().manual_seed(4)
    batch = () if B is None else (B,)
    x = torch.randn((*batch, D), generator=g, dtype=dtype).to(device)
    hx = None
    if give_hx:
        hx = tuple(torch.randn((*batch, H), generator=g, dtype=dtype).to(device) for _ in range(2))
        hx = hx if name == "LSTMCell" else hx[0]
    assert_parity(ref, ours, x, hx, TOLERANCE[dtype])


@pytest.mark.parametrize(
    "name, kwargs",
    [(n, {"num_layers": 2}) for n in NETWORKS]
    + [("LSTM", {"num_layers": 2, "bias": False}), ("RNN", {"nonlinearity": "relu"})]
    + [(n, {}) for n in CELLS]
    + [("GRUCell", {"bias": False})],
)
def test_same_parameters_and_state_dict_both_ways(name, kwargs):
    torch.manual_seed(10)
    ref = getattr(nn, name)(3, 4, **kwargs)
    torch.manual_seed(11)
    ours = getattr(rtorch, name)(3, 4, **kwargs)

    # Same names, order, shapes and dtypes of parameters.
    assert [(k, p.shape, p.dtype) for k, p in ours.named_parameters()] == [
        (k, p.shape, p.dtype) for k, p in ref.named_parameters()
    ]
    assert not any(torch.equal(ours.state_dict()[k], v) for k, v in ref.state_dict().items())

    # torch.nn -> ours, strict.
    ours.load_state_dict(ref.state_dict(), strict=True)
    for k, v in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k

    # ours -> torch.nn, strict.
    torch.manual_seed(12)
    ours_fresh = getattr(rtorch, name)(3, 4, **kwargs)
    ref.load_state_dict(ours_fresh.state_dict(), strict=True)
    for k, v in ours_fresh.state_dict().items():
        assert torch.equal(ref.state_dict()[k], v), k
    assert repr(ours) == repr(ref)


@pytest.mark.parametrize(
    "name, kwargs",
    [(n, {"num_layers": 3}) for n in NETWORKS]
    + [("GRU", {"num_layers": 2, "bias": False}), ("RNN", {"nonlinearity": "relu"})]
    + [(n, {}) for n in CELLS],
)
def test_same_init_given_the_same_seed(name, kwargs):
    # torch.nn draws every parameter from uniform(-1/√H, 1/√H) in registration order; so do we.
    torch.manual_seed(5)
    ref = getattr(nn, name)(6, 7, dtype=torch.float64, **kwargs)
    torch.manual_seed(5)
    ours = getattr(rtorch, name)(6, 7, dtype=torch.float64, **kwargs)
    for (k, a), (_, b) in zip(ours.named_parameters(), ref.named_parameters(), strict=True):
        assert a.dtype == torch.float64
        assert torch.equal(a, b), k
    # and reset_parameters redraws the same way
    torch.manual_seed(6)
    ref.reset_parameters()
    torch.manual_seed(6)
    ours.reset_parameters()
    for (k, a), (_, b) in zip(ours.named_parameters(), ref.named_parameters(), strict=True):
        assert torch.equal(a, b), k


@pytest.mark.parametrize(
    "name, args",
    [
        ("RNN", (3, 4, 2, "relu", False, True, 0.0, False)),  # num_layers, nonlinearity, bias, batch_first
        ("LSTM", (3, 4, 2, False, True, 0.0, False, 0)),  # bias, batch_first, dropout, bidirectional, proj
        ("GRU", (3, 4, 2, False, True)),
        ("RNNCell", (3, 4, False, "relu")),
        ("LSTMCell", (3, 4, False)),
        ("GRUCell", (3, 4, False)),
    ],
)
def test_positional_arguments_mean_the_same(name, args):
    ours, ref = getattr(rtorch, name)(*args), getattr(nn, name)(*args)
    assert repr(ours) == repr(ref)
    assert getattr(ours, "nonlinearity", None) == getattr(ref, "nonlinearity", None)
    assert list(ours.state_dict()) == list(ref.state_dict())


@pytest.mark.parametrize("name, equation", [("RNN", "rnn_cell"), ("LSTM", "lstm_cell"), ("GRU", "gru_cell")])
def test_gate_equations_come_from_rnnlib_equations(monkeypatch, name, equation):
    # One equation, one place: the network and its cell both call rnnlib.equations once per step and layer.
    calls = []
    original = getattr(rtorch, equation)

    def spy(*args):
        calls.append(args[0].shape)
        return original(*args)

    monkeypatch.setattr(rtorch, equation, spy)
    T, B, L = 3, 2, 2
    getattr(rtorch, name)(3, 4, num_layers=L)(torch.randn(T, B, 3))
    assert len(calls) == T * L
    getattr(rtorch, name + "Cell")(3, 4)(torch.randn(B, 3))
    assert len(calls) == T * L + 1


# --- numpy reference (rnnlib.numpy, float64) vs rnnlib.torch ------------------------------------------------


@pytest.mark.parametrize("name", NETWORKS)
def test_numpy_forward_matches_torch_forward(name):
    from rnnlib import numpy as rnp

    T, B, D, H, L = 4, 3, 3, 5, 2
    torch.manual_seed(7)
    ours = getattr(rtorch, name)(D, H, num_layers=L, dtype=torch.float64)
    x = torch.randn(T, B, D, dtype=torch.float64)
    h0, c0 = torch.randn(L, B, H, dtype=torch.float64), torch.randn(L, B, H, dtype=torch.float64)
    with torch.no_grad():
        if name == "LSTM":
            output, (h_n, c_n) = ours(x, (h0, c0))
        else:
            output, h_n = ours(x, h0)

    layer_input = x.numpy()
    for l in range(L):
        params = rnp.params_from_torch(ours, layer=l)
        if name == "LSTM":
            hs, (h_T, c_T), _ = rnp.lstm_forward(layer_input, h0[l].numpy(), c0[l].numpy(), params)
            np.testing.assert_allclose(c_T, c_n[l].numpy(), rtol=0, atol=1e-10)
        else:
            forward = rnp.rnn_forward if name == "RNN" else rnp.gru_forward
            hs, h_T, _ = forward(layer_input, h0[l].numpy(), params)
        np.testing.assert_allclose(h_T, h_n[l].numpy(), rtol=0, atol=1e-10)
        layer_input = hs
    np.testing.assert_allclose(layer_input, output.numpy(), rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", CELLS)
def test_numpy_cell_matches_torch_cell(name):
    from rnnlib import numpy as rnp

    B, D, H = 3, 4, 5
    torch.manual_seed(8)
    ours = getattr(rtorch, name)(D, H, dtype=torch.float64)
    params = {k: v.numpy() for k, v in ours.state_dict().items()}  # the cell's names have no _l0 suffix
    x, h, c = (torch.randn(B, n, dtype=torch.float64) for n in (D, H, H))
    with torch.no_grad():
        if name == "LSTMCell":
            h_t, c_t = ours(x, (h, c))
            h_np, c_np, _ = rnp.lstm_cell_forward(x.numpy(), h.numpy(), c.numpy(), params)
            np.testing.assert_allclose(c_np, c_t.numpy(), rtol=0, atol=1e-10)
        else:
            h_t = ours(x, h)
            forward = rnp.rnn_cell_forward if name == "RNNCell" else rnp.gru_cell_forward
            h_np, _ = forward(x.numpy(), h.numpy(), params)
    np.testing.assert_allclose(h_np, h_t.numpy(), rtol=0, atol=1e-10)


# --- errors: see tests/test_torch_errors.py (every case against torch.nn's own exception) ----------------
