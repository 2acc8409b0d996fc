"""Several server processes answering one HTTP port: the listening sockets, the worker processes, their shutdown.

The supervisor binds the port before any worker starts (so `--port 0` works and no connection is refused while
workers boot), then starts each worker in a fresh interpreter. On Linux each worker gets its own socket bound with
`SO_REUSEPORT`, and the kernel spreads new connections evenly over them; elsewhere all workers accept from one
shared socket. SIGTERM or SIGINT to the supervisor is passed on to every worker as SIGTERM; a worker that exits
on its own stops the others; a worker whose supervisor dies stops itself.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

BACKLOG = 2048  # uvicorn's default
STOP_SECONDS = 30.0  # how long the supervisor waits for stopping workers before it kills them


def balanced_by_kernel() -> bool:
    """Whether each worker gets a socket of its own (SO_REUSEPORT load-balances only on Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """Listening sockets on (host, port) for `count` workers; port 0 picks one free port for all of them."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    made: list[socket.socket] = []
    try:
        for _ in range(count if balanced_by_kernel() else 1):
            sock = socket.socket(family, kind, proto)
            made.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if balanced_by_kernel():
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            address = sock.getsockname()  # the port chosen for the first socket binds the others
            sock.listen(BACKLOG)
            sock.set_inheritable(True)
    except BaseException:
        for sock in made:
            sock.close()
        raise
    return made if len(made) == count else made * count


def supervise(target: Callable[..., None], args_of: Callable[[int, socket.socket], tuple[Any, ...]], sockets: list[socket.socket]) -> int:
    """Run `target(*args_of(n, socket))` in one spawned process per socket until a signal or a worker's exit.

    Returns 0 when the workers were asked to stop and all exited cleanly, else 1.
    """
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=target, args=args_of(n, sock), name=f"bigrag-mcp worker {n}") for n, sock in enumerate(sockets)
    ]
    asked = threading.Event()

    def stop(signum: int, _frame: Any) -> None:
        asked.set()
        for worker in workers:
            if worker.pid is not None and worker.exitcode is None:
                os.kill(worker.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for worker in workers:
            worker.start()
        for sock in dict.fromkeys(sockets):  # the workers hold their own copies now
            sock.close()
        if asked.is_set():  # a signal came while workers were still starting
            stop(signal.SIGTERM, None)
        multiprocessing.connection.wait([w.sentinel for w in workers])  # returns as soon as one worker exits
        if not asked.is_set():
            ended = next(w for w in workers if w.exitcode is not None)
            log.error("%s exited with code %s; stopping the other workers", ended.name, ended.exitcode)
            print(f"error: {ended.name} exited with code {ended.exitcode}; stopping the others", file=sys.stderr)
            stop(signal.SIGTERM, None)
        for worker in workers:
            worker.join(STOP_SECONDS)
            if worker.exitcode is None:
                log.error("%s did not stop within %.0f s; killing it", worker.name, STOP_SECONDS)
                worker.kill()
                worker.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if asked.is_set() and all(w.exitcode == 0 for w in workers) else 1


def exit_with_supervisor() -> None:
    """In a worker: stop (as on SIGTERM) when the supervisor process goes away, even if it was killed outright."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor watch", daemon=True).start()
