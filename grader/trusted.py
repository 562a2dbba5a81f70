"""The trusted process's end of the channel: the learner's names as plain data and as remote functions.

Runs in the trusted kernel, where the test cells run and learner code never does. Before a test cell the
grader calls ``bind(PATH, names)``: each of ``names`` (the globals that the assignment's answer cells
define) that the learner's notebook has is bound in the test's namespace, a function as a
``SandboxFunction`` that calls it in the sandbox, anything else as the plain value it holds there (an
``Unreadable`` marker for what is not plain data). After the cell, ``release()`` lets the sandbox go on.
"""

import socket
import time
from typing import Any

from grader import channel

CONNECT_TIMEOUT = 30.0  # seconds for the sandbox's agent to start listening


class SandboxError(Exception):
    """The learner's function raised in the sandbox (its type name and message, as text only)."""


class SandboxFunction:
    """Calls the learner's function ``name`` in the sandbox with plain-data arguments; returns plain data."""

    def __init__(self, name: str, connection: socket.socket) -> None:
        self.__name__ = self.__qualname__ = name
        self._connection = connection

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _reply(
            self._connection, {"op": "call", "name": self.__name__, "args": list(args), "kwargs": kwargs}
        )

    def __repr__(self) -> str:
        return f"<learner's function {self.__name__} (runs in the sandbox)>"


def _reply(connection: socket.socket, request: dict) -> Any:
    channel.send(connection, request)
    reply = channel.receive(connection)
    status = reply.get("status") if type(reply) is dict else None
    if status == "value":
        return reply.get("value")
    if status == "error":
        message = f"{reply.get('type')}: {reply.get('message')}"
        trace = reply.get("traceback")
        raise SandboxError(f"{message}\n\n(in the learner's code)\n{trace}" if trace else message)
    raise channel.ChannelError(f"unexpected reply from the sandbox: {status!r}")


_connection: socket.socket | None = None


def connect(path: str) -> socket.socket:
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def bind(path: str, names: list[str], namespace: dict) -> None:
    """Connect to the sandbox at ``path`` and bind each of ``names`` it has into ``namespace``."""
    global _connection
    release()
    _connection = connect(path)
    for name in names:
        namespace.pop(name, None)
        channel.send(_connection, {"op": "get", "name": name})
        reply = channel.receive(_connection)
        status = reply.get("status") if type(reply) is dict else None
        if status == "callable":
            namespace[name] = SandboxFunction(name, _connection)
        elif status == "value":
            namespace[name] = reply.get("value")


def release() -> None:
    """Tell the sandbox the test cell is over and close the connection."""
    global _connection
    if _connection is None:
        return
    try:
        channel.send(_connection, {"op": "done"})
    except OSError:
        pass
    _connection.close()
    _connection = None
