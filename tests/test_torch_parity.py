"""rnnlib.torch against torch.nn (the reference) and against rnnlib.numpy.

Outputs, final states and the gradients of every parameter, of the input and of the initial state must equal
torch.nn's for the same weights: to 1e-6 in float64. In float32 both libraries round, differently (another
order of sums, cuDNN's kernels on a GPU), so neither is the truth: both are compared with a float64 run of
torch.nn on the same (float32-representable) weights and inputs, and rnnlib's error may be at most
F32_ERROR_FACTOR times torch.nn's own error plus a few ulps of the largest value (F32_ULPS).
"""

import copy

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


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
TOLERANCE = {torch.float64: 1e-6, torch.float32: None}  # float32: from the error argument above
F32_ERROR_FACTOR, F32_ULPS = 4.0, 8.0
torch.set_num_threads(1)
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
    pytest.param(4, 3, 3, 4, {"bidirectional": True}, False, id="bidirectional"),
    pytest.param(5, 2, 3, 4, {"bidirectional": True, "num_layers": 2}, True, id="bidirectional-2layers-hx"),
    pytest.param(
        3, 2, 2, 3, {"bidirectional": True, "bias": False, "batch_first": True}, True, id="bi-nobias-bf"
    ),
    pytest.param(4, None, 3, 4, {"bidirectional": True, "num_layers": 2}, True, id="bi-unbatched-hx"),
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


def assert_parity(ref: nn.Module, ours: nn.Module, x: torch.Tensor, hx, tol: float | None) -> None:
    """Same forward values and same gradients of a random linear loss w.r.t. parameters, x and hx.

    tol None (float32): each result's error against a float64 run of torch.nn may be F32_ERROR_FACTOR
    times torch.nn's float32 error plus F32_ULPS ulps of the largest value.
    """
    leaves = {"x": x, **{f"hx[{i}]": h for i, h in enumerate(flatten(hx) if hx is not None else [])}}
    results = {}
    exact = copy.deepcopy(ref).double() if tol is None else None
    for module in (ref, ours) + ((exact,) if exact is not None else ()):
        if module is exact:
            leaves = {k: v.double() for k, v in leaves.items()}
            hx = tuple(h.double() for h in hx) if isinstance(hx, tuple) else hx if hx is None else hx.double()
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
    assert our_grads.keys() == ref_grads.keys()
    pairs = {f"result {i}": (a, b) for i, (a, b) in enumerate(zip(our_out, ref_out, strict=True))}
    pairs |= {f"d/d{k}": (our_grads[k], ref_grads[k]) for k in ref_grads}
    if exact is None:
        for label, (a, b) in pairs.items():
            torch.testing.assert_close(a, b, atol=tol, rtol=tol, msg=lambda m, label=label: f"{label}: {m}")
        return
    exact_out, exact_grads = results[exact]
    truth = {f"result {i}": o for i, o in enumerate(exact_out)} | {
        f"d/d{k}": g for k, g in exact_grads.items()
    }
    for label, (a, b) in pairs.items():
        t = truth[label]
        ours_err, torch_err = (a.double() - t).abs().max().item(), (b.double() - t).abs().max().item()
        allowed = (
            F32_ERROR_FACTOR * torch_err + F32_ULPS * torch.finfo(torch.float32).eps * t.abs().max().item()
        )
        assert ours_err <= allowed, (
            f"{label}: error {ours_err:.2e} vs float64 > {allowed:.2e} (torch.nn's {torch_err:.2e})"
        )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("T, B, D, H, kwargs, give_hx", NETWORK_CASES)
@pytest.mark.parametrize("name", NETWORKS)
def test_network_matches_torch(name, T, B, D, H, kwargs, give_hx, dtype, device):
    ref, ours = make_pair(name, D, H, dtype=dtype, device=device, **kwargs)
    g = torch.Generator().manual_seed(2)
    L = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
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


# --- projections, packed sequences, dropout, second derivatives --------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "kwargs, give_hx",
    [
        ({"proj_size": 2}, False),
        ({"proj_size": 3, "num_layers": 2, "bidirectional": True}, True),
        ({"proj_size": 2, "bias": False, "batch_first": True}, True),
    ],
)
def test_lstm_projection_matches_torch(kwargs, give_hx, dtype):
    ref, ours = make_pair("LSTM", 3, 5, dtype=dtype, **kwargs)
    assert [k for k, _ in ours.named_parameters()] == [k for k, _ in ref.named_parameters()]
    g = torch.Generator().manual_seed(9)
    T, B, P, L = (
        4,
        3,
        kwargs["proj_size"],
        kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1),
    )
    x = torch.randn((B, T, 3) if kwargs.get("batch_first") else (T, B, 3), generator=g, dtype=dtype)
    hx = (torch.randn(L, B, P, generator=g, dtype=dtype), torch.randn(L, B, 5, generator=g, dtype=dtype))
    assert_parity(ref, ours, x, hx if give_hx else None, TOLERANCE[dtype])


def _packed_run(module, x, lengths, hx, enforce_sorted):
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
    out, state = module(packed, hx)
    assert isinstance(out, nn.utils.rnn.PackedSequence)
    padded, out_lengths = nn.utils.rnn.pad_packed_sequence(out)
    assert out_lengths.tolist() == list(lengths)
    return [padded, *flatten(state)]


@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("RNN", {}),
        ("GRU", {"num_layers": 2}),
        ("LSTM", {"bidirectional": True}),
        ("GRU", {"bidirectional": True, "num_layers": 2}),
        ("LSTM", {"proj_size": 2, "bidirectional": True}),
    ],
)
def test_packed_sequence_matches_torch(name, kwargs, enforce_sorted):
    ref, ours = make_pair(name, 3, 4, **kwargs)
    lengths = [5, 3, 3, 1] if enforce_sorted else [3, 5, 1, 3]
    g = torch.Generator().manual_seed(11)
    L = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
    P = kwargs.get("proj_size", 0) or 4
    x = torch.randn(5, 4, 3, generator=g, dtype=torch.float64)
    h = torch.randn(L, 4, P, generator=g, dtype=torch.float64)
    hx = (h, torch.randn(L, 4, 4, generator=g, dtype=torch.float64)) if name == "LSTM" else h
    results = []
    for module in (ref, ours):
        xg = x.clone().requires_grad_(True)
        hg = tuple(t.clone().requires_grad_(True) for t in flatten(hx))
        out = _packed_run(module, xg, lengths, hg if name == "LSTM" else hg[0], enforce_sorted)
        loss = sum((o * w).sum() for o, w in zip(out, random_like(out, seed=12), strict=True))
        wrt = [xg, *hg, *module.parameters()]
        results.append((out, torch.autograd.grad(loss, wrt)))
    for a, b in zip(results[1][0] + list(results[1][1]), results[0][0] + list(results[0][1]), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", NETWORKS)
def test_dropout_is_read_at_forward_time_and_only_in_train_mode(name):
    ref, ours = make_pair(name, 3, 4, num_layers=3, dropout=0.5)
    x = torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    for module in (ref, ours):
        module.eval()  # no dropout: deterministic, equal to torch.nn's
    torch.testing.assert_close(flatten(ours(x)), flatten(ref(x)), atol=1e-6, rtol=1e-6)
    for module in (ref, ours):
        module.train()
        module.dropout = 1.0  # every unit between layers dropped: layers 2 and 3 read zeros, deterministic
    torch.testing.assert_close(flatten(ours(x)), flatten(ref(x)), atol=1e-6, rtol=1e-6)
    ours.dropout = 0.0  # set after construction, read by the next forward
    ref.dropout = 0.0
    torch.testing.assert_close(flatten(ours(x)), flatten(ref(x)), atol=1e-6, rtol=1e-6)


def test_dropout_statistics_match_torch():
    # 4000 copies of one sequence through a 2-layer GRU with dropout 0.3 in train mode: each copy draws its
    # own mask, so the mean and spread over copies of each output agree with torch.nn's to sampling error.
    ref, ours = make_pair("GRU", 3, 8, num_layers=2, dropout=0.3)
    x = torch.randn(4, 1, 3, generator=torch.Generator().manual_seed(14), dtype=torch.float64).expand(
        4, 4000, 3
    )
    torch.manual_seed(15)
    with torch.no_grad():
        a, b = ours(x)[0], ref(x)[0]  # (T, 4000, H)
    n = a.shape[1]
    std_err = torch.sqrt((a.var(1) + b.var(1)) / n)  # of the difference of the two means
    assert ((a.mean(1) - b.mean(1)).abs() < 5 * std_err + 1e-12).all()
    assert torch.allclose(a.std(1), b.std(1), rtol=0.1, atol=1e-3)
    assert a.std(1).max() > 0.01  # the masks really vary between copies
    with torch.no_grad():
        assert torch.equal(ours.eval()(x)[0], ours(x)[0])  # and eval mode is deterministic


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, kwargs",
    [("RNN", {"bidirectional": True}), ("LSTM", {"num_layers": 2}), ("GRU", {"bidirectional": True}),
     ("RNN", {"nonlinearity": "relu"})],
)  # fmt: skip
def test_gradcheck_and_gradgradcheck(name, kwargs):
    # the fast backward (BPTT) and, with create_graph, the loop re-run under autograd: both against
    # finite differences.
    torch.manual_seed(16)
    module = getattr(rtorch, name)(2, 3, dtype=torch.float64, **kwargs)
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    params = list(module.parameters())

    def fn(x, *weights):
        names = [k for k, _ in module.named_parameters()]
        out = torch.func.functional_call(module, dict(zip(names, weights, strict=True)), (x,))
        return flatten(out)

    assert torch.autograd.gradcheck(fn, (x, *params))
    assert torch.autograd.gradgradcheck(fn, (x, *params))


def test_flat_weights_all_weights_and_flatten_parameters():
    ref, ours = make_pair("LSTM", 3, 5, num_layers=2, bidirectional=True, proj_size=2)
    assert ours._flat_weights_names == ref._flat_weights_names
    assert [[p.shape for p in ws] for ws in ours.all_weights] == [
        [p.shape for p in ws] for ws in ref.all_weights
    ]
    assert all(a is b for a, b in zip(ours._flat_weights, ours.parameters(), strict=True))
    ours.flatten_parameters()  # a no-op off cuDNN, as torch.nn's
    # a weight replaced by a plain tensor (weight-norm style) is what the next forward uses
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    before = ours(x)[0]
    w = ours.weight_hh_l1.detach() * 0
    del ours.weight_hh_l1
    ours.weight_hh_l1 = w
    assert ours._flat_weights[ours._flat_weights_names.index("weight_hh_l1")] is w
    assert not torch.equal(ours(x)[0], before)


@pytest.mark.parametrize("name", NETWORKS)
def test_torch_func_grad_and_vmap_match_torch(name):
    ref, ours = make_pair(name, 3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 2, 3, dtype=torch.float64)

    def loss(module, params, x):
        return flatten(torch.func.functional_call(module, params, (x,)))[0].sum()

    grads = [torch.func.grad(lambda p, m=m: loss(m, p, x))(dict(m.named_parameters())) for m in (ref, ours)]
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], atol=1e-6, rtol=1e-6)
    # torch.nn has no batching rule for its RNN kernels: vmap over ours, one unbatched sequence at a time,
    # against torch.nn on the whole batch
    mapped = torch.func.vmap(lambda xb: ours(xb)[0], in_dims=1, out_dims=1)(x)
    torch.testing.assert_close(mapped, ref(x)[0], atol=1e-6, rtol=1e-6)


def test_network_by_name_and_forget_bias():
    assert {k: type(rtorch.network(k, 3, 4)) for k in ("rnn", "lstm", "gru")} == {
        "rnn": rtorch.RNN, "lstm": rtorch.LSTM, "gru": rtorch.GRU
    }  # fmt: skip
    torch.manual_seed(17)
    lstm = rtorch.network("lstm", 3, 4, num_layers=2, bidirectional=True, forget_bias=1.5)
    torch.manual_seed(17)
    plain = nn.LSTM(3, 4, num_layers=2, bidirectional=True)  # the same draws, torch.nn's layout
    for name, p in plain.named_parameters():
        shift = torch.zeros_like(p)
        if name.startswith("bias_ih"):
            shift[4:8] = 1.5  # rows H..2H: the forget gate (order i, f, g, o)
        torch.testing.assert_close(getattr(lstm, name), p + shift, rtol=0, atol=0)
    with pytest.raises(ValueError, match="LSTM only"):
        rtorch.network("gru", 3, 4, forget_bias=1.0)
    with pytest.raises(ValueError, match="cell must be one of"):
        rtorch.network("transformer", 3, 4)
    with pytest.raises(ValueError, match="no bias_ih"):
        rtorch.add_forget_bias(nn.LSTMCell(3, 4, bias=False), 1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_loop_tanh_is_tanh_to_the_last_bits(dtype):
    """Outside autograd the loop's tanh is NumPy's kernel (rnnlib.torch._tanh): it must be tanh, within 2 ulp
    of a float64 tanh (float32) or of torch.tanh (float64), over the whole range, on strided views, with
    signed zeros and infinities; with autograd on, it is torch.tanh and differentiable."""
    special = [0.0, -0.0, 1e-30, -1e-30, 1e-8, float("inf"), -float("inf")]
    x = torch.cat([torch.linspace(-30, 30, 200_001, dtype=dtype), torch.tensor(special, dtype=dtype)])
    want = torch.tanh(x.double()) if dtype == torch.float32 else torch.tanh(x)
    ulp = torch.finfo(dtype).eps * want.abs().clamp_min(torch.finfo(dtype).tiny)
    got = rtorch._tanh(x)
    assert got.dtype == dtype and torch.equal(torch.signbit(got), torch.signbit(want.to(dtype)))
    assert ((got.double() - want.double()).abs() <= 2 * ulp.double()).all()
    strided = x[::3]
    assert torch.equal(rtorch._tanh(strided), got[::3])
    leaf = x[:5].clone().requires_grad_()
    assert rtorch._tanh(leaf).grad_fn is not None
