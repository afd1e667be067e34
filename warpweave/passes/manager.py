"""The pass manager: runs GIR → GIR passes, verifying and dumping after each."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..ir.gir import Kernel
from ..ir.gir_verify import verify


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable[[Kernel], Kernel]


class PassManager:
    """`run(kernel)` applies the passes in order. With `verify`, the kernel is
    checked before the first pass and after every pass; without, the final kernel is
    still checked once (bounds among the rest: nothing unproven reaches code
    generation). `dump(stage, kernel)` is called with the input (stage "lowered")
    and after every pass."""

    def __init__(self, passes: list[Pass], verify: bool = True,
                 dump: Callable[[str, Kernel], None] | None = None):
        self.passes = list(passes)
        self.verify = verify
        self.dump = dump

    def run(self, kernel: Kernel) -> Kernel:
        self._after("lowered", kernel)
        for p in self.passes:
            kernel = p.run(kernel)
            self._after(p.name, kernel)
        if not self.verify:
            verify(kernel)
        return kernel

    def _after(self, stage: str, kernel: Kernel) -> None:
        if self.verify:
            verify(kernel)
        if self.dump is not None:
            self.dump(stage, kernel)
