"""Plain data between the sandbox and the trusted process: never a pickle, never an object of the sandbox.

A message is one frame on a unix socket: an 8-byte length, a JSON header, then the raw bytes of the arrays it
names. What can cross: None, bool, int, float, complex, str, numpy arrays of numbers or booleans (as ``.npy``
bytes, read with ``allow_pickle=False``), numpy scalars, torch tensors (an array plus a flag, rebuilt on the
trusted side), and lists, tuples, dicts, sets and frozensets of those. ``decode`` builds exactly these types
and nothing else, so whatever the sandbox sends, the trusted side holds plain values of types it checked.

Both sides import this module: the sandbox to encode results, the trusted process to decode them (and the
other way round for arguments). Standard library and numpy only; torch is imported lazily where present.
"""

import io
import json
import socket
import struct
import sys
from typing import Any

import numpy as np

MAX_FRAME = 64 * 2**20  # bytes: a larger frame is refused (the answers are small arrays)
MAX_DEPTH = 32
_NUMERIC = "biufc"  # numpy dtype kinds that may cross: bool, int, uint, float, complex
_LENGTH = struct.Struct("!Q")


class ChannelError(Exception):
    """A frame that is not plain data, too large, too deep, or a closed connection."""


class Unreadable:
    """What the trusted side holds for a sandbox value that is not plain data: its type name, nothing else."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<unreadable {self.type_name}: the grader reads only arrays, numbers, strings and containers>"


def _tensor_type() -> type | None:
    torch = sys.modules.get("torch")
    return getattr(torch, "Tensor", None)


def encode(value: Any) -> bytes:
    """``value`` as one frame's payload; anything that is not plain data becomes an ``Unreadable`` marker."""
    blobs: list[bytes] = []
    tensor = _tensor_type()

    def walk(v: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ChannelError("value nested too deeply")
        t = type(v)
        if v is None or t in (bool, int, str):
            return v
        if t is float:
            return {"float": repr(v)}  # repr round-trips exactly, nan and inf included
        if t is complex:
            return {"complex": [repr(v.real), repr(v.imag)]}
        if t in (list, tuple, set, frozenset):
            return {t.__name__: [walk(item, depth + 1) for item in v]}
        if t is dict:
            return {"dict": [[walk(k, depth + 1), walk(x, depth + 1)] for k, x in v.items()]}
        if t is np.ndarray and v.dtype.kind in _NUMERIC:
            return {"ndarray": _blob(blobs, v)}
        if isinstance(v, np.generic) and t.__module__ == "numpy" and v.dtype.kind in _NUMERIC:
            return {"npscalar": _blob(blobs, np.asarray(v))}
        if tensor is not None and t is tensor and not v.is_complex():
            return {"tensor": _blob(blobs, v.detach().cpu().resolve_conj().resolve_neg().numpy())}
        return {"unreadable": f"{t.__module__}.{t.__qualname__}"}

    header = json.dumps({"value": walk(value, 0), "blobs": [len(b) for b in blobs]}).encode()
    return _LENGTH.pack(len(header)) + header + b"".join(blobs)


def _blob(blobs: list[bytes], array: np.ndarray) -> int:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)  # any layout, 0-d included
    blobs.append(buffer.getvalue())
    return len(blobs) - 1


def decode(payload: bytes) -> Any:
    """The plain value in ``payload``, built from exact builtin and numpy types; ChannelError otherwise."""
    try:
        (size,) = _LENGTH.unpack_from(payload)
        header = json.loads(payload[_LENGTH.size : _LENGTH.size + size])
        offsets, at = [], _LENGTH.size + size
        for length in header["blobs"]:
            if type(length) is not int or length < 0 or at + length > len(payload):
                raise ChannelError("malformed blob table")
            offsets.append((at, at + length))
            at += length
    except (struct.error, ValueError, KeyError, TypeError) as error:
        raise ChannelError(f"malformed frame: {error}") from None

    def array(index: Any) -> np.ndarray:
        if type(index) is not int or not 0 <= index < len(offsets):
            raise ChannelError("bad blob index")
        start, end = offsets[index]
        try:
            a = np.load(io.BytesIO(payload[start:end]), allow_pickle=False)
        except ValueError as error:
            raise ChannelError(f"bad array: {error}") from None
        if type(a) is not np.ndarray or a.dtype.kind not in _NUMERIC:
            raise ChannelError("only numeric arrays may cross")
        return a

    def build(node: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ChannelError("value nested too deeply")
        if node is None or type(node) in (bool, int, str):
            return node
        if type(node) is not dict or len(node) != 1:
            raise ChannelError("malformed value")
        ((kind, body),) = node.items()
        if kind == "float" and type(body) is str:
            return float(body)
        if kind == "complex" and type(body) is list and len(body) == 2:
            return complex(float(body[0]), float(body[1]))
        if kind in ("list", "tuple", "set", "frozenset") and type(body) is list:
            items = [build(item, depth + 1) for item in body]
            return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[kind](items)
        if kind == "dict" and type(body) is list:
            return {build(k, depth + 1): build(v, depth + 1) for k, v in (_pair(p) for p in body)}
        if kind == "ndarray":
            return array(body)
        if kind == "npscalar":
            return array(body)[()]
        if kind == "tensor":
            import torch

            return torch.from_numpy(array(body))
        if kind == "unreadable" and type(body) is str:
            return Unreadable(body[:200])
        raise ChannelError(f"unknown kind {kind!r}")

    try:
        return build(header["value"], 0)
    except (TypeError, ValueError, OverflowError) as error:  # e.g. an unhashable dict key
        raise ChannelError(f"malformed value: {error}") from None


def _pair(p: Any) -> list:
    if type(p) is not list or len(p) != 2:
        raise ChannelError("malformed dict item")
    return p


def send(sock: socket.socket, value: Any) -> None:
    payload = encode(value)
    sock.sendall(_LENGTH.pack(len(payload)) + payload)


def receive(sock: socket.socket) -> Any:
    """One frame from ``sock``, decoded; ChannelError when the peer closed or the frame is too large."""
    (size,) = _LENGTH.unpack(_read(sock, _LENGTH.size))
    if size > MAX_FRAME:
        raise ChannelError(f"frame of {size} bytes refused (at most {MAX_FRAME})")
    return decode(_read(sock, size))


def _read(sock: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 2**20))
        if not chunk:
            raise ChannelError("the sandbox closed the connection (its kernel died?)")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
