"""Child interpreters for tuning: a fresh Python process over two pipes, running a
module's `serve(read_fd, write_fd)`. Not multiprocessing's spawn, which re-imports the
caller's `__main__`: a script without a main guard would run again in every child.
The measurement worker (`measure`) and the compile processes (`compiling`) use it."""
from __future__ import annotations

import os
import subprocess
import sys
from multiprocessing.connection import Connection


def start_child(module: str) -> tuple[subprocess.Popen, Connection, Connection]:
    """(process, connection to send to it, connection to receive from it) of a new
    interpreter running `module.serve`, with this process's import path."""
    from_parent, to_child = os.pipe()
    from_child, to_parent = os.pipe()
    path = os.pathsep.join(os.path.abspath(p) for p in sys.path)
    process = subprocess.Popen(
        [sys.executable, "-c", f"from {module} import serve; serve({from_parent}, {to_parent})"],
        pass_fds=(from_parent, to_parent), env={**os.environ, "PYTHONPATH": path})
    os.close(from_parent)
    os.close(to_parent)
    return process, Connection(to_child, readable=False), Connection(from_child, writable=False)


def stop_child(process: subprocess.Popen, send: Connection, recv: Connection, wait_s: float) -> None:
    """End a child: asked to stop (a None message), killed if it has not within `wait_s`;
    both connections closed."""
    if process.poll() is None:
        try:
            send.send(None)
            process.wait(wait_s)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            process.kill()
            process.wait(5)
    send.close()
    recv.close()
