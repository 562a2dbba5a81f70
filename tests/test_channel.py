"""The grader's channel and the sandbox's view of rnnlib, without nbgrader (fast lane).

grader.channel is the only way data leaves a sandbox: whatever bytes arrive, the trusted side must hold
plain values of exact builtin/numpy types, or a ChannelError. grader.references must find every reference
function it hides in today's rnnlib (a renamed function must stop grading, not slip through).
"""

import ast
import importlib.util
import io
import json
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from grader import channel
from grader.references import HIDDEN, strip, write_view

ROOT = Path(__file__).resolve().parents[1]


def roundtrip(value):
    return channel.decode(channel.encode(value))


def frame(value_node, blobs=()) -> bytes:
    header = json.dumps({"value": value_node, "blobs": [len(b) for b in blobs]}).encode()
    return struct.pack("!Q", len(header)) + header + b"".join(blobs)


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "value",
    [
        None, True, 0, -(2**70), 1.5, float("inf"), "σ(x) ⊙ h", 3 - 4j,
        (1, [2.0, {"a": (3,)}]), {(1, "k"): [None]}, {1, 2}, frozenset({"x"}),
        np.float32(0.25), np.int64(7), np.bool_(True),
    ],
)  # fmt: skip
def test_plain_values_cross_with_their_exact_types(value):
    got = roundtrip(value)
    assert type(got) is type(value) and got == value


def test_arrays_cross_with_dtype_shape_and_values_including_0d_and_strided():
    for array in [np.arange(12.0).reshape(3, 4)[:, ::2], np.array(-800.0), np.zeros((0, 3), np.float32),
                  np.array([[True, False]]), np.array([np.nan, -np.inf])]:  # fmt: skip
        got = roundtrip(array)
        assert type(got) is np.ndarray and got.dtype == array.dtype and got.shape == array.shape
        np.testing.assert_array_equal(got, array)


def test_a_tensor_crosses_as_an_array_and_comes_back_a_tensor():
    tensor = torch.arange(6.0, dtype=torch.float64).reshape(2, 3).t()
    got = roundtrip(tensor)
    assert type(got) is torch.Tensor and got.dtype == torch.float64
    assert torch.equal(got, tensor)


class Agreeable(np.ndarray):
    def __eq__(self, other):
        return True


class Liar(float):
    def __eq__(self, other):
        return True


class ArrayLike:
    def __array__(self, dtype=None, copy=None):
        return np.zeros(3)


@pytest.mark.parametrize(
    "value",
    [np.zeros(3).view(Agreeable), Liar(1.0), ArrayLike(), np.array([object()], dtype=object), len,
     type("L", (list,), {})()],
)  # fmt: skip
def test_what_is_not_plain_data_arrives_as_an_unreadable_marker(value):
    got = roundtrip(value)
    assert type(got) is channel.Unreadable and type(value).__name__ in got.type_name


@pytest.mark.parametrize(
    "payload",
    [
        frame({"ndarray": 0}, [npy(np.array([{"a": 1}], dtype=object), allow_pickle=True)]),  # a pickle
        frame({"ndarray": 0}, [npy(np.array(["text"]))]),  # not numeric
        frame({"ndarray": 3}, []),  # no such blob
        frame({"dict": [[{"list": []}, 1]]}),  # an unhashable key
        frame({"pickle": "gASVAAAA"}),  # an unknown kind
        frame({"float": 1.0}),  # a float must be its repr
        frame(json.loads("[" * 3 + "]" * 3)),  # a bare JSON list is not a value
        frame(json.loads('{"list": ' * 40 + "[]" + "}" * 40)),  # too deep
        b"\x00\x00\x00\x00\x00\x00\x00\x05{not",  # not JSON
    ],
)
def test_a_crafted_frame_is_refused_not_obeyed(payload):
    with pytest.raises(channel.ChannelError):
        channel.decode(payload)


def test_an_oversized_frame_is_refused_before_it_is_read():
    left, right = socket.socketpair()
    with left, right:
        left.sendall(struct.pack("!Q", channel.MAX_FRAME + 1))
        with pytest.raises(channel.ChannelError, match="refused"):
            channel.receive(right)


def test_a_closed_connection_is_a_channel_error():
    left, right = socket.socketpair()
    with right:
        left.close()
        with pytest.raises(channel.ChannelError, match="closed"):
            channel.receive(right)


def test_strip_replaces_only_the_named_bodies_and_refuses_unknown_names():
    source = "def ref(x):\n    return 2 * x\n\n\ndef helper(x):\n    return ref(x) + 1\n"
    ns: dict = {}
    exec(strip(source, ("ref",), "numpy"), ns)
    with pytest.raises(NotImplementedError, match="rnnlib.numpy.ref is the course's reference"):
        ns["helper"](1)  # whatever calls the reference fails too
    with pytest.raises(LookupError, match="no function gone"):
        strip(source, ("gone",), "numpy")


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("assignment", sorted(HIDDEN))
def test_each_assignments_view_hides_its_references_and_keeps_the_helpers(assignment, tmp_path):
    hidden = write_view(assignment, ROOT / "rnnlib", tmp_path)
    assert sorted(p.name for p in (tmp_path / "rnnlib").glob("*.py")) == sorted(
        p.name for p in (ROOT / "rnnlib").glob("*.py")
    )
    for module, names in hidden.functions.items():
        view = load(tmp_path / "rnnlib" / f"{module}.py", f"view_{assignment}_{module}")
        for name in names:
            with pytest.raises(NotImplementedError, match="not available while grading"):
                getattr(view, name)(*([None] * getattr(view, name).__code__.co_argcount))
        tree = ast.parse((tmp_path / "rnnlib" / f"{module}.py").read_text())
        bodies = {n.name: n.body for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names}
        assert all(len(body) == 1 and isinstance(body[0], ast.Raise) for body in bodies.values())
    if not hidden.torch:
        stub = load(tmp_path / "torch" / "__init__.py", f"torch_stub_{assignment}")
        with pytest.raises(AttributeError, match="not available while this exercise is graded"):
            stub.nn  # noqa: B018
    if assignment == "03_lstm_gates":  # the helpers a learner may use stay real
        view = load(tmp_path / "rnnlib" / "numpy.py", "view_03_numpy_helpers")
        assert view.sigmoid(np.array([0.0]))[0] == 0.5
