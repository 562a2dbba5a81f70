"""The sandbox's end of the channel: answers the trusted process's requests for the learner's names.

Runs inside the learner's kernel (in the sandbox), on its main thread: before each test cell the grader
sends the silent request ``serve(PATH)``, which listens on the unix socket PATH for the trusted process and
answers, until it says "done":

- ``{"op": "get", "name": n}``  -> the value of the notebook's global ``n`` as plain data, or that it is
  callable, or missing;
- ``{"op": "call", "name": n, "args": [...], "kwargs": {...}}`` -> the learner's ``n(*args, **kwargs)``.

Nothing here is trusted: learner code can replace any of it. The grade cannot depend on it, because the
trusted side reads only plain data (grader.channel) and compares it with values it computes itself.
"""

import os
import socket
import traceback
from typing import Any

from grader import channel

ACCEPT_TIMEOUT = 30.0  # seconds to wait for the trusted process to connect


def _namespace() -> dict:
    from IPython import get_ipython

    return get_ipython().user_ns


def answer(request: Any, ns: dict) -> dict:
    """The reply to one request, never raising for what learner code does."""
    if type(request) is not dict or request.get("name") is None:
        return {"status": "error", "type": "ChannelError", "message": "malformed request", "traceback": ""}
    name = request["name"]
    if name not in ns:
        return {"status": "missing"}
    value = ns[name]
    if request.get("op") == "get":
        return {"status": "callable"} if callable(value) else {"status": "value", "value": value}
    try:
        result = value(*request.get("args", ()), **request.get("kwargs", {}))
        return {"status": "value", "value": result}
    except BaseException as error:  # noqa: B036 — SystemExit and KeyboardInterrupt are the learner's errors too
        text = "".join(traceback.format_exception(error)[-20:])
        return {
            "status": "error",
            "type": type(error).__name__,
            "message": str(error)[:2000],
            "traceback": text,
        }


def serve(path: str) -> None:
    """Answer the trusted process on the unix socket ``path`` until it sends "done" or hangs up."""
    if os.path.exists(path):
        os.unlink(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)
        server.settimeout(ACCEPT_TIMEOUT)
        connection, _ = server.accept()
    with connection:
        ns = _namespace()
        while True:
            try:
                request = channel.receive(connection)
            except channel.ChannelError:
                return
            if type(request) is dict and request.get("op") == "done":
                return
            reply = answer(request, ns)
            try:
                channel.send(connection, reply)
            except channel.ChannelError as error:  # e.g. too deep: say so instead of hanging
                channel.send(connection, {"status": "error", "type": "ChannelError", "message": str(error)})
