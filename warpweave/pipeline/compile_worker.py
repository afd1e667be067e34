"""A compile worker (`python -m warpweave.pipeline.compile_worker`, started by
`pipeline.parallel`): reads length-prefixed pickled `(Job, Options, cache directory)`
messages on stdin, compiles each into that cache, and answers one byte per job on
stdout (b"1" built, b"0" failed). Anything the compile prints goes to stderr."""
from __future__ import annotations

import dataclasses
import os
import pickle
import sys


def main() -> None:
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # prints from the compile must not interleave with the answers
    sys.stdout = sys.stderr
    requests = sys.stdin.buffer
    while True:
        head = requests.read(8)
        if len(head) < 8:
            return
        message = requests.read(int.from_bytes(head, "little"))
        answers.write(b"1" if _build(message) else b"0")
        answers.flush()


def _build(message: bytes) -> bool:
    from ..options import options
    from .cache import ENV_VAR
    from .compile import compile_graph

    try:
        job, opts, directory = pickle.loads(message)
        os.environ[ENV_VAR] = directory
        with options(**{f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)}):
            compile_graph(job.graph, job.single, job.target, job.name)
        return True
    except Exception:  # noqa: BLE001 - the parent compiles it again and reports what it raises
        return False


if __name__ == "__main__":
    main()
