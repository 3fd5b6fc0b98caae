"""A warm test runner for mutation testing (mutmut 2.x), used by ``scripts/mutation.sh``.

mutmut runs its ``--runner`` command once per mutant. Importing TensorFlow and Keras takes about
5 s of every run, often more than the tests that kill the mutant. ``serve`` imports them once
(never ``tf_lrp``: the code under test is read fresh from disk by every run) and then, for every
request, forks a child that runs pytest and reports its exit code. ``run`` is the runner mutmut
calls: it sends its pytest arguments to the server and exits with the child's code.

mutmut 3 forks too, but after running the tests once in the parent (TensorFlow's thread pools do
not survive a fork, so every mutant timed out); here the parent has only imported modules, which
forks cleanly.

Usage::

    python scripts/mutation_worker.py serve SOCKET          # in the background
    python scripts/mutation_worker.py run SOCKET -- -x -q tests/test_rules.py
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys

#: a run that takes longer is stopped and counts as a failure (a mutant that loops forever)
RUN_TIMEOUT_S = 300


def serve(path: str) -> None:
    """Import the heavy dependencies once, then fork one pytest run per request."""
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    sys.dont_write_bytecode = True
    # the checkout being mutated (the working directory) must shadow any installed tf_lrp
    sys.path.insert(0, os.getcwd())
    import importlib.util

    origin = importlib.util.find_spec("tf_lrp").origin
    if not origin.startswith(os.getcwd() + os.sep):
        sys.exit(f"tf_lrp resolves to {origin}, not to the checkout in {os.getcwd()}")
    import keras  # noqa: F401
    import numpy  # noqa: F401
    import pytest  # noqa: F401
    import tensorflow  # noqa: F401

    for optional in ("keras_hub", "sklearn.neighbors", "scipy.sparse", "matplotlib.pyplot"):
        with contextlib.suppress(ImportError):
            __import__(optional)
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    print(f"mutation worker ready on {path}", flush=True)
    while True:
        conn, _ = server.accept()
        with conn:
            args = json.loads(conn.makefile("r").readline())
            pid = os.fork()
            if pid == 0:
                server.close()
                conn.close()
                signal.alarm(RUN_TIMEOUT_S)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                import pytest

                code = int(pytest.main(args))
                os._exit(code)
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
            conn.sendall(f"{code}\n".encode())


def run(path: str, args: list[str]) -> int:
    """Send one pytest run to the server and return its exit code (1 if the server is gone)."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)
    client.sendall((json.dumps(args) + "\n").encode())
    reply = client.makefile("r").readline().strip()
    return int(reply) if reply else 1


if __name__ == "__main__":
    command, sock = sys.argv[1], sys.argv[2]
    if command == "serve":
        serve(sock)
    elif command == "run":
        rest = sys.argv[3:]
        sys.exit(run(sock, rest[1:] if rest[:1] == ["--"] else rest))
    else:
        sys.exit(f"unknown command {command!r}: use serve or run")
