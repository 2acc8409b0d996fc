"""The stdio transport on event-loop pipes: the wire carries only messages, whole and in order, with no worker
thread per line; a file on stdin falls back to the SDK's own transport; the descriptors are restored on exit."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

# echoes every message back, writes stray output while serving and reports what it saw afterwards on stderr
CHILD = """
import json, os, sys, threading
import anyio
from bigrag_mcp.stdio_pipes import stdio_streams

async def main():
    async with stdio_streams() as (read, write):
        print("stray print", flush=True)
        os.write(1, b"stray write\\n")
        async for message in read:
            await write.send(message)
        threads = threading.active_count()
        await write.aclose()
        sys.stderr.write("served\\n")
        sys.stderr.flush()
    os.write(1, b"restored\\n")
    sys.stderr.write(json.dumps({"threads": threads, "stdin_blocking": os.get_blocking(0)}) + "\\n")

anyio.run(main)
"""


def request(number: int, text: str) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": number, "method": "ping", "params": {"_meta": {"text": text}}})


LINES = [request(1, "short"), request(2, "ünïcödé ✓ " * 3), request(3, "x" * 3_000_000)]  # a line of 3 MB


def serve(tmp_path: Path, stdin: int | None, data: bytes | None) -> tuple[list[str], dict[str, object], str]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    done = subprocess.run([sys.executable, str(script)], stdin=stdin, input=data, capture_output=True, timeout=120, check=True)
    out, err = done.stdout.decode().splitlines(), done.stderr.decode()
    return out, json.loads(err.splitlines()[-1]), err


def test_messages_cross_a_pipe_whole_and_in_order_with_no_worker_threads(tmp_path: Path) -> None:
    out, seen, err = serve(tmp_path, None, ("\n".join(LINES) + "\n").encode())
    assert [json.loads(line) for line in out[:-1]] == [json.loads(line) for line in LINES]
    assert out[-1] == "restored"  # fd 1 is the wire again after serving
    assert "stray print" in err and "stray write" in err  # stray output went to stderr, not the wire
    assert seen == {"threads": 1, "stdin_blocking": True}  # no reader/writer threads; the descriptor left as found


@pytest.mark.parametrize("closed_early", [False, True])
def test_a_file_on_stdin_falls_back_to_the_sdk_transport(tmp_path: Path, closed_early: bool) -> None:
    source = tmp_path / "requests.jsonl"
    source.write_text("\n".join(LINES[:2]) + ("" if closed_early else "\n"))  # the last line may lack its newline
    with source.open("rb") as stdin:
        out, seen, err = serve(tmp_path, stdin.fileno(), None)
    assert [json.loads(line) for line in out[:-1]] == [json.loads(line) for line in LINES[:2]]
    assert out[-1] == "restored" and "stray write" in err
    assert seen["threads"] > 1  # the SDK reads a file through worker threads


def test_one_socket_for_stdin_and_stdout_falls_back_to_the_sdk_transport(tmp_path: Path) -> None:
    """inetd style: an asyncio write pipe on that socket would read (and drop) the requests meant for the reader."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        child = subprocess.Popen([sys.executable, str(script)], stdin=theirs, stdout=theirs, stderr=subprocess.PIPE)
        theirs.close()
        ours.sendall(("\n".join(LINES[:2]) + "\n").encode())
        ours.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := ours.recv(65536):
            received += chunk
        _, err = child.communicate(timeout=120)
    out = received.decode().splitlines()
    assert [json.loads(line) for line in out[:-1]] == [json.loads(line) for line in LINES[:2]]
    assert out[-1] == "restored" and json.loads(err.decode().splitlines()[-1])["threads"] > 1


def test_the_last_responses_still_buffered_reach_a_slow_reader_before_the_wire_is_restored(tmp_path: Path) -> None:
    """A 100 KB response into a 64 KB pipe nobody reads yet: the rest waits in the transport; it must not be dropped
    when serving ends (the reader starts only once the child has finished serving)."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    line = request(1, "y" * 100_000)
    out_read, out_write = os.pipe()
    fcntl.fcntl(out_write, fcntl.F_SETPIPE_SZ, 65536)
    child = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=out_write, stderr=subprocess.PIPE)
    os.close(out_write)
    assert child.stdin is not None and child.stderr is not None
    child.stdin.write((line + "\n").encode())
    child.stdin.close()
    while (said := child.stderr.readline()) != b"served\n":  # the child has served everything: now read
        assert said, "the child ended before serving"
    with os.fdopen(out_read, "rb") as wire:
        out = wire.read().decode().splitlines()
    child.wait(timeout=60)
    assert [json.loads(one) for one in out[:-1]] == [json.loads(line)] and out[-1] == "restored"
