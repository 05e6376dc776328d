"""Isolated, unforgeable execution of model-written code.

Example:
    >>> from laimark_pl.sandbox import create, Program
    >>> with create("process", workers=2, timeout_s=5.0) as sandbox:  # doctest: +SKIP
    ...     verdicts = sandbox.check([Program("def f(x):\\n    return 2 * x", "assert f(2) == 4")])
    >>> verdicts[0].passed  # doctest: +SKIP
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from laimark_pl.sandbox.types import Program, Sandbox, Verdict

if TYPE_CHECKING:
    from laimark_pl.sandbox.process import ProcessSandbox, SandboxError

BACKENDS = ("process", "docker")

__all__ = ["BACKENDS", "Program", "ProcessSandbox", "Sandbox", "SandboxError", "Verdict", "create"]


def create(backend: str = "process", **kwargs: Any) -> Sandbox:
    """A sandbox of the given backend: ``"process"`` (`ProcessSandbox`) or ``"docker"``
    (``laimark_pl.sandbox.docker.DockerSandbox``, imported only when asked for)."""
    if backend == "process":
        from laimark_pl.sandbox.process import ProcessSandbox

        return ProcessSandbox(**kwargs)
    if backend == "docker":
        from laimark_pl.sandbox.docker import DockerSandbox

        return DockerSandbox(**kwargs)
    raise ValueError(f"unknown sandbox backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def __getattr__(name: str) -> Any:
    # Imported lazily so the sandbox's worker processes (which import this package) stay small.
    if name in ("ProcessSandbox", "SandboxError"):
        from laimark_pl.sandbox import process

        return getattr(process, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
