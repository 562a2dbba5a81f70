"""PyTorch's own module inputs for RNN/LSTM/GRU and the cells (torch.testing._internal.common_modules),
run through torch.nn and rnnlib.torch with the same weights: outputs and every gradient agree in float64.

The inputs are torch's, not ours: every constructor configuration and forward input its test-suite uses,
packed sequences included.
"""

import copy

import numpy as np
import pytest
import torch
from torch import nn

import rnnlib.torch as rtorch

pytest.importorskip("expecttest", reason="torch.testing._internal needs expecttest (the course extra has it)")
from torch.testing._internal.common_modules import module_db  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global random state (torch and numpy's legacy generator)."""
    torch.manual_seed(0)
    np.random.seed(0)


torch.set_num_threads(1)
NAMES = ("RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell")


def _inputs():
    for info in module_db:
        name = info.module_cls.__name__
        if info.module_cls is not getattr(nn, name, None) or name not in NAMES:
            continue
        variants = [{}] + ([{"with_packed_sequence": True}] if name in ("RNN", "GRU") else [])
        for extra in variants:
            found = info.module_inputs_func(
                info, device="cpu", dtype=torch.float64, requires_grad=True, training=True, **extra
            )
            for i, module_input in enumerate(found):
                yield pytest.param(name, module_input, id=f"{name}-{'packed-' if extra else ''}{i}")


def _tensors(value) -> list[torch.Tensor]:
    """The tensors in a (nested) output, a PackedSequence's data included."""
    if isinstance(value, nn.utils.rnn.PackedSequence):
        return [value.data]
    if isinstance(value, torch.Tensor):
        return [value]
    return [t for item in value for t in _tensors(item)]


@pytest.mark.parametrize("name, module_input", list(_inputs()))
def test_torch_module_inputs_give_the_same_results(name, module_input):
    args, kwargs = module_input.constructor_input.args, module_input.constructor_input.kwargs
    torch.manual_seed(0)
    ref = getattr(nn, name)(*args, **kwargs).double()
    ours = getattr(rtorch, name)(*args, **kwargs).double()
    ours.load_state_dict(ref.state_dict())
    assert repr(ours) == repr(ref)
    results = []
    for module in (ref, ours):
        forward_args = copy.deepcopy(module_input.forward_input.args)
        leaves = [t for t in _tensors(forward_args) if t.requires_grad]
        out = _tensors(module(*forward_args, **module_input.forward_input.kwargs))
        g = torch.Generator().manual_seed(1)
        loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in out)
        results.append((out, torch.autograd.grad(loss, [*leaves, *module.parameters()], allow_unused=True)))
    (ref_out, ref_grads), (our_out, our_grads) = results
    torch.testing.assert_close(our_out, ref_out, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(list(our_grads), list(ref_grads), atol=1e-6, rtol=1e-6)


def _error_inputs():
    for info in module_db:
        name = info.module_cls.__name__
        if (
            info.module_cls is not getattr(nn, name, None)
            or name not in NAMES
            or not info.module_error_inputs_func
        ):
            continue
        found = info.module_error_inputs_func(
            info, device="cpu", dtype=torch.float64, requires_grad=False, training=True
        )
        for i, error_input in enumerate(found):
            yield pytest.param(name, error_input, id=f"{name}-{i}")


@pytest.mark.parametrize("name, error_input", list(_error_inputs()))
def test_torch_error_inputs_raise_torch_errors(name, error_input):
    from torch.testing._internal.common_modules import ModuleErrorEnum

    module_input = error_input.module_error_input
    args, kwargs = module_input.constructor_input.args, module_input.constructor_input.kwargs
    with pytest.raises(error_input.error_type, match=error_input.error_regex):
        module = getattr(rtorch, name)(*args, **kwargs).double()
        assert error_input.error_on == ModuleErrorEnum.FORWARD_ERROR, "constructed what torch refuses"
        module(*module_input.forward_input.args, **module_input.forward_input.kwargs)
