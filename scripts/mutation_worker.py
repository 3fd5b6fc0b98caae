"""A warm test runner for mutation testing (mutmut 2.x), used by ``scripts/mutation.sh``.

mutmut runs its ``--runner`` command once per mutant. Importing TensorFlow and Keras takes about
5 s of every run, often more than the tests that kill the mutant. ``serve`` imports them once
(never ``tf_lrp``: the code under test is read fresh from disk by every run) and then, for every
request, forks a child that runs pytest and reports its exit code. ``run`` is the runner mutmut
calls: it sends its pytest arguments to the server and exits with the child's code.

mutmut 3 forks too, but after running the tests once in the parent (TensorFlow's thread pools do
not survive a fork, so every mutant timed out); here the parent has only imported modules, which
forks cleanly.

With ``--coverage COVERAGE_JSON`` (``coverage json --show-contexts`` of a pytest-cov run with
``--cov-context=test``) each run is narrowed to the tests that execute the mutated statement:
the server reads the mutation off ``git diff`` of the checkout, maps each changed line to the
first line of its innermost statement, and runs the tests whose context covers it. A statement
that runs at import (module constants, signatures, decorators), or that coverage saw in no test
(it misses threads it does not start, such as tf.data's), keeps every test.

Usage::

    python scripts/mutation_worker.py serve SOCKET [--coverage coverage.json]   # background
    python scripts/mutation_worker.py run SOCKET -- -x -q tests/test_rules.py
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys

#: a run that takes longer is stopped and counts as a failure (a mutant that loops forever)
RUN_TIMEOUT_S = 1200


class CoverageMap:
    """Which tests execute each statement of the checkout's modules (from coverage contexts)."""

    def __init__(self, path: str):
        with open(path, encoding="utf-8") as stream:
            files = json.load(stream)["files"]
        self.lines: dict[str, dict[int, set[str]]] = {}
        for name, data in files.items():
            per_line: dict[int, set[str]] = {}
            for line, contexts in data.get("contexts", {}).items():
                tests = {c.split("|")[0] for c in contexts}
                per_line[int(line)] = {t for t in tests if t} | ({""} if "" in tests else set())
            self.lines[os.path.normpath(name)] = per_line
        self._statements: dict[str, list[tuple[int, int]]] = {}

    def _statement(self, name: str, line: int) -> int | None:
        """The first line of the innermost statement spanning ``line`` (of the original file),
        or ``None`` where that statement runs at import: outside any function body (module and
        class level, a ``def``'s signature and decorators). Coverage credits an import to the
        test that happened to import the module first, so those keep every test."""
        if name not in self._statements:
            source = subprocess.run(["git", "show", f"HEAD:{name}"], capture_output=True,
                                    text=True, check=True).stdout
            spans: list[tuple[int, int, bool]] = []

            def visit(node: ast.AST, in_function: bool) -> None:
                # statements below a def run when it is called (its header at import)
                inside = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.stmt):
                        spans.append((child.lineno, child.end_lineno or child.lineno, inside))
                    visit(child, inside)

            visit(ast.parse(source), False)
            self._statements[name] = spans
        found = [s for s in self._statements[name] if s[0] <= line <= s[1]]
        if not found:
            return None
        start, _, in_function = max(found)
        return start if in_function else None

    def select(self, args: list[str]) -> list[str]:
        """``args`` with the test paths replaced by the tests covering the mutation; unchanged
        when the mutation cannot be located or any test may see it."""
        diff = subprocess.run(["git", "diff", "-U0", "--", "tf_lrp"], capture_output=True,
                              text=True, check=False).stdout
        changed: list[tuple[str, int]] = []
        name = None
        for row in diff.splitlines():
            if row.startswith("--- a/"):
                name = os.path.normpath(row[6:])
            hunk = re.match(r"^@@ -(\d+)(?:,(\d+))? \+", row)
            if hunk and name:
                start, count = int(hunk.group(1)), int(hunk.group(2) or 1)
                changed += [(name, start + i) for i in range(max(count, 1))]
        if not changed or any(n not in self.lines for n, _ in changed):
            return args
        tests: set[str] = set()
        for n, line in changed:
            start = self._statement(n, line)
            if start is None:  # runs at import
                return args
            tests |= self.lines[n].get(start, set())
        if "" in tests or not tests:
            # executed at import, or not seen by coverage: a statement run in a thread coverage
            # does not trace (tf.data runs Python generators in its own C++ threads) has no
            # context, so "no context" does not mean "no test runs it": every test
            return args
        paths = [a for a in args if a.endswith(".py") or "::" in a]
        options = [a for a in args if a not in paths]  # with their values (-p no:x)
        order = {p: i for i, p in enumerate(paths)}  # the given files' order, then by name
        return options + sorted(tests, key=lambda t: (order.get(t.split("::")[0], len(order)), t))


def serve(path: str, coverage: str | None = None) -> None:
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
    tests = CoverageMap(coverage) if coverage else None
    print(f"mutation worker ready on {path}", flush=True)
    while True:
        conn, _ = server.accept()
        with conn:
            args = json.loads(conn.makefile("r").readline())
            narrowed = args if tests is None else tests.select(args)
            code = _forked_pytest(server, conn, narrowed)
            if narrowed is not args and code not in (0, 1):  # a bad selection, not a kill
                code = _forked_pytest(server, conn, args)
            conn.sendall(f"{_verdict(code)}\n".encode())


def _verdict(code: int) -> int:
    """The exit code mutmut 2 is told. It counts every code but 1 as "the tests pass", so a
    mutant that breaks the import (pytest 2: errors during collection), pytest itself (3, 4) or
    the process (a signal, the timeout's alarm) would count as a survivor. The unmutated
    checkout passes, so each of those is the mutant's doing: a kill. 5 (no tests ran) stays."""
    return 1 if code in (2, 3, 4) or code < 0 else code


def _forked_pytest(server: socket.socket, conn: socket.socket, args: list[str]) -> int:
    """pytest's exit code for ``args`` in a forked child (0 passed, 1 failed, other: trouble)."""
    pid = os.fork()
    if pid == 0:
        server.close()
        conn.close()
        signal.alarm(RUN_TIMEOUT_S)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        import pytest

        os._exit(int(pytest.main(args)))
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


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
        rest = sys.argv[3:]
        serve(sock, rest[1] if rest[:1] == ["--coverage"] else None)
    elif command == "run":
        rest = sys.argv[3:]
        sys.exit(run(sock, rest[1:] if rest[:1] == ["--"] else rest))
    else:
        sys.exit(f"unknown command {command!r}: use serve or run")
