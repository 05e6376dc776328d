"""The process backend: a pool of pre-started, isolated workers that fork one child per execution.

Trust model: this module (the parent) and the workers (``zygote.py``) never run untrusted code (the
parent compiles each program, ``jobs.py``, which runs none of it).
Per execution the worker forks the *candidate* child (runs the program) and, for tests that are
not assert-shaped, a *tester* child (runs the tests against proxies). For assert-shaped tests
the parent sends the candidate only the calls to make, receives plain-data results and
evaluates the asserts itself (``asserts.py``); otherwise the tester reports per-assert outcomes.
Exit codes and stdout of the candidate never decide a verdict: a pass needs every expected
answer, in order; an early exit leaves answers missing ("crashed"). Once every answer is in and
the verdict is a pass, it is returned without waiting for the process to end (the worker kills
whatever is left and cleans up while the next request queues).

Example:
    >>> from laimark_pl.sandbox import Program, ProcessSandbox
    >>> with ProcessSandbox(workers=1) as sb:  # doctest: +SKIP
    ...     sb.check([Program("def inc(x):\\n    return x + 1", "assert inc(1) == 2")])[0].passed
    True
"""

from __future__ import annotations

import json
import os
import queue
import select
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed, wait
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from laimark_pl.sandbox.asserts import AssertPlan, plan_asserts
from laimark_pl.sandbox.isolation import Limits
from laimark_pl.sandbox.jobs import build_job
from laimark_pl.sandbox.judge import NEVER_CALLED, judge_calls, judge_tester
from laimark_pl.sandbox.types import Program, Verdict
from laimark_pl.sandbox.wire import (
    FrameBuffer,
    FrameError,
    unpack_report,
)

TAIL_BYTES = 4096
_SIGXCPU, _SIGXFSZ = 24, 25
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def _protect_from_same_uid_children() -> None:
    """Executions run under our own uid: make this (trusted) process non-dumpable so they cannot
    ptrace it or read its memory (it also disables core dumps of this process)."""
    from laimark_pl.sandbox.isolation import PR_SET_DUMPABLE, IsolationError, prctl

    try:
        prctl(PR_SET_DUMPABLE, 0)
    except IsolationError as exc:  # pragma: no cover - prctl(PR_SET_DUMPABLE) does not fail on Linux
        warnings.warn(f"could not make the sandbox parent non-dumpable: {exc}", RuntimeWarning, stacklevel=3)


def _site_dirs() -> list[str]:
    import site

    try:
        return [d for d in site.getsitepackages() if os.path.isdir(d)]
    except AttributeError:
        return []


class SandboxError(RuntimeError):
    """The sandbox itself failed (a worker could not start)."""


class ProcessSandbox:
    """Run untrusted programs against their tests in isolated, pre-started worker processes.

    Args:
        workers: parallel workers (default: one per CPU core).
        timeout_s: wall-clock limit per execution; the whole process tree is killed after it.
        memory_mb: address-space limit per process.
        max_processes: processes/threads one execution may create.
        max_output_bytes: stdout + stderr (and result data) one execution may produce.
        isolate: network/mount namespaces, minimal read-only root and per-worker uids (needs
            root; degrades with a warning otherwise). ``False`` (inside a hardened container)
            keeps temp dirs, rlimits, tree killing, output caps and the trusted verdict. Whenever
            executions share this process's uid, this process is made non-dumpable so that they
            cannot ptrace it or read its memory.
        max_source_bytes: larger programs or tests get an ``"error"`` verdict.
        max_file_bytes: largest file one execution may write.
        scratch_mb: size of each worker's private ``/tmp`` (a tmpfs; full isolation only).

    Programs are compiled here (never run here) and reach their child as code objects. Tests that
    are not assert-shaped run in a second child that calls the program's functions through a pipe; both
    children of such an execution share one CPU (their worker's), a program's own threads too.

    Verdict statuses: ``passed``; ``failed`` (an assert did not hold, the program raised, or
    returned non-plain data); ``error`` (bad input: syntax errors, non-UTF-8 text, oversized
    sources, tests without assertions or that never call the program); ``timeout``; ``memory``;
    ``output_limit``; ``crashed`` (the program died before answering every call).
    """

    def __init__(self, workers: int | None = None, timeout_s: float = 5.0, memory_mb: int = 512,
                 max_processes: int = 32, max_output_bytes: int = 1 << 20, isolate: bool = True,
                 max_source_bytes: int = 1 << 19, max_file_bytes: int = 64 << 20, scratch_mb: int = 64):
        if not sys.platform.startswith("linux"):
            raise SandboxError(f"the process backend needs Linux (this is {sys.platform}); use backend='docker'")
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if memory_mb < 64:
            raise ValueError(f"memory_mb must be >= 64, got {memory_mb}")
        if max_processes < 1:
            raise ValueError(f"max_processes must be >= 1, got {max_processes}")
        self.workers = workers or os.cpu_count() or 1
        self.timeout_s = float(timeout_s)
        self.max_output_bytes = int(max_output_bytes)
        self.max_source_bytes = int(max_source_bytes)
        self.isolate = isolate
        self.limits = Limits(cpu_s=int(timeout_s) + 1, memory_mb=memory_mb, max_processes=max_processes,
                             max_file_bytes=max_file_bytes, scratch_mb=scratch_mb)
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._all: list[_Worker] = []
        self._closed = False
        self._owner_pid = os.getpid()
        workers_ = [_Worker(slot, self) for slot in range(self.workers)]
        try:
            for worker in workers_:
                worker.start()
            for worker in workers_:
                worker.wait_ready()
        except BaseException:
            for worker in workers_:
                worker.stop()
            raise
        for worker in workers_:
            self._all.append(worker)
            self._idle.put(worker)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="laimark-sandbox")
        if not isolate or os.geteuid() != 0:
            _protect_from_same_uid_children()
        if self.degraded:
            warnings.warn("laimark sandbox isolation degraded: " + "; ".join(self.degraded), RuntimeWarning,
                          stacklevel=2)

    # ------------------------------------------------------------------ public API

    def check(self, programs: Sequence[Program], *, progress: bool | str = False) -> list[Verdict]:
        """Judge every program (in parallel); verdicts come back in input order.

        ``progress``: show a progress bar (a string is used as its description).
        """
        if self._closed:
            raise SandboxError("the sandbox is closed")
        if os.getpid() != self._owner_pid:
            raise SandboxError("this sandbox belongs to the process that created it; create a new one "
                               "in this (forked) process")
        futures = [self._pool.submit(self._check_one, p) for p in programs]
        if progress:
            from tqdm.auto import tqdm

            desc = progress if isinstance(progress, str) else "sandbox"
            with tqdm(total=len(futures), desc=desc, unit="prog") as bar:
                for _ in as_completed(futures):
                    bar.update()
        else:
            wait(futures)  # one wake-up for the whole batch
        return [f.result() for f in futures]

    def close(self) -> None:
        """Stop every worker (their namespaces and scratch space disappear with them)."""
        if self._closed:
            return
        self._closed = True
        if os.getpid() != self._owner_pid:  # a forked copy (e.g. a data-loader worker): not ours
            return
        self._pool.shutdown(wait=True)
        for worker in self._all:
            worker.stop()

    def __enter__(self) -> ProcessSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for monitoring and tests)."""
        return [w.pid for w in self._all if w.pid is not None]

    @property
    def degraded(self) -> list[str]:
        """Isolation features the kernel refused (empty when fully isolated)."""
        return sorted({msg for w in self._all for msg in w.degraded})

    # ------------------------------------------------------------------ internals

    def _check_one(self, program: Program) -> Verdict:
        started = time.monotonic()
        problem = self._reject(program)
        if problem:
            return Verdict("error", False, detail=problem)
        try:
            plan = plan_asserts(program.tests, program.entry_point)
        except (SyntaxError, ValueError) as exc:
            return Verdict("error", False, detail=f"tests do not parse: {type(exc).__name__}: {exc}"[:500])
        except (RecursionError, MemoryError) as exc:
            return Verdict("error", False, detail=f"tests too complex to parse: {type(exc).__name__}")
        if plan is not None and not plan.units:
            return Verdict("error", False, detail="the tests contain no assertions")
        if plan is not None and not plan.calls:
            return Verdict("error", False, detail=NEVER_CALLED, tests_total=len(plan.units))
        payload = build_job(program, plan)
        worker = self._idle.get()
        try:
            verdict = worker.execute(payload, plan)
        finally:
            self._idle.put(worker)
        return replace(verdict, duration_s=time.monotonic() - started)

    def _reject(self, program: Program) -> str:
        for name in ("code", "tests"):
            text = getattr(program, name)
            if not isinstance(text, str):
                return f"{name} must be a str, got {type(text).__name__}"
            try:
                size = len(text.encode("utf-8"))
            except UnicodeEncodeError as exc:
                return f"{name} is not valid UTF-8 text (position {exc.start}: lone surrogate)"
            if size > self.max_source_bytes:
                return f"{name} is {size} bytes, over the {self.max_source_bytes}-byte limit"
        if not program.tests.strip():
            return "the tests are empty"
        if program.entry_point is not None and (not isinstance(program.entry_point, str)
                                                or not program.entry_point.isidentifier()):
            return f"entry_point is not a Python identifier: {program.entry_point!r}"
        return ""


class _Worker:
    """Parent-side handle of one worker process (restarted transparently when it dies)."""

    def __init__(self, slot: int, sandbox: ProcessSandbox):
        self.slot = slot
        self.sandbox = sandbox
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.pid: int | None = None
        self.degraded: list[str] = []
        self.pending_reports = 0  # reports of executions that passed before their process ended
        self._lock = threading.Lock()

    # -- lifecycle

    def start(self) -> None:
        self.pending_reports = 0
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sb = self.sandbox
        config = json.dumps({"fd": child.fileno(), "slot": self.slot, "isolate": sb.isolate,
                             "timeout_s": sb.timeout_s, "limits": asdict(sb.limits)})
        paths = [_PACKAGE_ROOT, *_site_dirs()]
        code = (f"import sys; sys.path += {paths!r}; "
                "from laimark_pl.sandbox.zygote import main; main(sys.argv[1])")
        # LD_BIND_NOW: resolve every symbol once, in the worker, instead of in (and copying a page
        # of) each execution child that first calls a libc function.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "LD_BIND_NOW": "1"}
        try:
            # -I: no '' (the working directory) on sys.path, no PYTHON* variables, no user site;
            # -S: no site. The package and site dirs come after the standard library.
            self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", code, config], pass_fds=(child.fileno(),),
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env,
                                         cwd="/", close_fds=True)
        finally:
            child.close()
        self.sock = parent
        self.pid = self.proc.pid

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        assert self.sock is not None and self.proc is not None
        self.sock.settimeout(timeout_s)
        try:
            msg = self.sock.recv(65536)
        except (TimeoutError, OSError) as exc:
            raise SandboxError(f"sandbox worker {self.slot} did not start: {exc}") from exc
        finally:
            self.sock.settimeout(None)
        if not msg:
            code = self.proc.wait(5)
            raise SandboxError(f"sandbox worker {self.slot} exited during start-up (status {code}); "
                               "see its stderr above")
        hello = json.loads(msg)
        self.degraded = hello.get("degraded", [])

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        self.pid = None

    def restart(self) -> None:
        if self.proc is not None:
            self.proc.kill()
        self.stop()
        self.start()
        self.wait_ready()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- one execution

    def execute(self, payload: tuple[str, bytes], plan: AssertPlan | None) -> Verdict:
        with self._lock:
            if not self.alive():
                self.restart()
            try:
                return self._execute(payload, plan)
            except (BrokenPipeError, ConnectionError) as exc:
                self.restart()
                return Verdict("crashed", False, detail=f"sandbox worker died: {exc}")

    def _execute(self, payload: tuple[str, bytes], plan: AssertPlan | None) -> Verdict:
        mode, data = payload
        sb = self.sandbox
        assert self.sock is not None
        job_r, job_w = os.pipe()
        res_r, res_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        run = _Run(self, sb, data, job_w, res_r, out_r, err_r)
        try:
            run.prefill()  # most jobs fit the pipe: the child finds them there, no round trip
            socket.send_fds(self.sock, [mode.encode()], [job_r, res_w, out_w, err_w])
        except BaseException:
            run.close()
            raise
        finally:
            for fd in (job_r, res_w, out_w, err_w):
                os.close(fd)

        def passes_already() -> bool:
            # Every answer is in and the verdict is a pass: whatever the process does next cannot
            # change it, so don't wait for its exit (the worker reaps and cleans up meanwhile).
            if mode == "calls" and (plan is None or len(run.frames) < 1 + len(plan.calls)):
                return False
            run.judged = (judge_calls(plan, run.frames, run.frame_error) if mode == "calls"
                          else judge_tester(run.frames, run.frame_error))
            return run.judged[0] == "passed" and not run.overflow

        try:
            report = run.collect(sb.timeout_s + 10.0, passes_already)
        finally:
            run.close()
        if report is _EARLY:
            self.pending_reports += 1  # read (and dropped) by the next execution
            return _verdict(mode, plan, run, report)
        if report is None:  # the worker hung or died: replace it
            self.restart()
            return Verdict("crashed", False, detail="sandbox worker stopped responding",
                           stdout_tail=run.tail(1), stderr_tail=run.tail(2))
        return _verdict(mode, plan, run, report)


_EARLY: dict = {"statuses": {}, "early": True}


class _Run:
    """I/O of one execution: feed the job, drain results/stdout/stderr, enforce output caps."""

    def __init__(self, worker: _Worker, sb: ProcessSandbox, data: bytes, job_w: int, res_r: int,
                 out_r: int, err_r: int):
        self.worker, self.sb = worker, sb
        self.data = memoryview(data)
        self.fds = {"job": job_w, "res": res_r, "out": out_r, "err": err_r}
        self.frames: list[Any] = []
        self.frame_error = ""
        self.buffer = FrameBuffer(max_bytes=max(sb.max_output_bytes, 1 << 20) * 16)
        self.tails = {1: bytearray(), 2: bytearray()}
        self.output_bytes = 0
        self.result_bytes = 0
        self.overflow = ""
        self.kill_sent = False
        self.judged: tuple[str, str, int, int] | None = None

    def tail(self, which: int) -> str:
        return bytes(self.tails[which][-TAIL_BYTES:]).decode("utf-8", errors="replace")

    def close(self) -> None:
        for fd in self.fds.values():
            if fd >= 0:
                os.close(fd)
        self.fds = {k: -1 for k in self.fds}

    def _kill(self, reason: str) -> None:
        self.overflow = self.overflow or reason
        if not self.kill_sent and self.worker.sock is not None:
            self.kill_sent = True
            self.worker.sock.send(b"kill")

    def prefill(self) -> None:
        """Write as much of the job as the pipe takes without blocking."""
        os.set_blocking(self.fds["job"], False)
        try:
            self.data = self.data[os.write(self.fds["job"], self.data[:1 << 16]):]
        except BlockingIOError:
            pass

    def collect(self, limit_s: float, passes_already: Any) -> dict | None:
        """Pump I/O until the worker's report and end of output, or until ``passes_already()``
        (returns `_EARLY`); None when the worker died or stopped responding."""
        sock = self.worker.sock
        assert sock is not None
        poller = select.poll()
        roles = {}
        for role, fd in self.fds.items():
            poller.register(fd, select.POLLOUT if role == "job" else select.POLLIN)
            roles[fd] = role
        poller.register(sock.fileno(), select.POLLIN)
        if not self.data:
            self._close_fd("job", poller)
        report = None
        deadline = time.monotonic() + limit_s
        while report is None or any(self.fds[r] >= 0 for r in ("res", "out", "err")):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            for fd, _event in poller.poll(remaining * 1000):
                if fd == sock.fileno():
                    msg = sock.recv(65536)
                    if not msg:
                        return None
                    if self.worker.pending_reports:  # of an earlier execution that passed early
                        self.worker.pending_reports -= 1
                        continue
                    try:
                        report = unpack_report(msg)
                    except FrameError:
                        return None  # not our worker's protocol: replace it
                    poller.unregister(fd)
                    continue
                role = roles.get(fd)
                if role is None or self.fds[role] < 0:
                    continue
                if role == "job":
                    self._write_job(poller)
                elif self._read(role, poller) and report is None and passes_already():
                    self._drain_output()
                    return _EARLY
        return report

    def _drain_output(self) -> None:
        for role in ("out", "err"):
            fd = self.fds[role]
            if fd < 0:
                continue
            os.set_blocking(fd, False)
            try:
                while chunk := os.read(fd, 1 << 16):
                    self._keep_output(1 if role == "out" else 2, chunk)
            except (BlockingIOError, OSError):
                pass

    def _close_fd(self, role: str, poller: select.poll) -> None:
        fd = self.fds[role]
        if fd >= 0:
            poller.unregister(fd)
            os.close(fd)
            self.fds[role] = -1

    def _write_job(self, poller: select.poll) -> None:
        try:
            written = os.write(self.fds["job"], self.data[:1 << 16])
        except BlockingIOError:
            return
        except OSError:  # the child is gone
            self._close_fd("job", poller)
            return
        self.data = self.data[written:]
        if not self.data:
            self._close_fd("job", poller)

    def _read(self, role: str, poller: select.poll) -> bool:
        """Read what is ready; True when new result frames arrived."""
        try:
            chunk = os.read(self.fds[role], 1 << 16)
        except OSError:
            chunk = b""
        if not chunk:
            self._close_fd(role, poller)
            return False
        if role == "res":
            self.result_bytes += len(chunk)
            if self.result_bytes > 16 * max(self.sb.max_output_bytes, 1 << 20):
                self._kill("result data over the limit")
                return False
            if self.frame_error:
                return False
            try:
                new = self.buffer.feed(chunk)
            except (FrameError, ValueError, RecursionError) as exc:
                self.frame_error = f"malformed result frame: {exc}"[:300]
                return False
            self.frames.extend(new)
            return bool(new)
        self._keep_output(1 if role == "out" else 2, chunk)
        return False

    def _keep_output(self, which: int, chunk: bytes) -> None:
        self.output_bytes += len(chunk)
        tail = self.tails[which]
        tail += chunk
        if len(tail) > 4 * TAIL_BYTES:
            del tail[:-TAIL_BYTES]
        if self.output_bytes > self.sb.max_output_bytes:
            self._kill(f"output over {self.sb.max_output_bytes} bytes")


# ---------------------------------------------------------------------- verdicts


def _verdict(mode: str, plan: AssertPlan | None, run: _Run, report: dict) -> Verdict:
    statuses = report.get("statuses", {})
    role = "tester" if mode == "tester" else "candidate"
    exit_code = statuses.get(role)
    extra = {"mode": "asserts" if mode == "calls" else "tester", "exit_code": exit_code,
             "candidate_exit_code": statuses.get("candidate"), "leftover_processes": report.get("leftovers", 0)}
    common = {"stdout_tail": run.tail(1), "stderr_tail": run.tail(2), "extra": extra}
    if report is _EARLY and run.judged is not None:
        status, detail, passed_n, total = run.judged
    elif mode == "calls":
        assert plan is not None
        status, detail, passed_n, total = judge_calls(plan, run.frames, run.frame_error)
    else:
        status, detail, passed_n, total = judge_tester(run.frames, run.frame_error)
    signal_status = {-_SIGXCPU: "timeout", -_SIGXFSZ: "output_limit"}.get(statuses.get("candidate") or 0)
    if run.overflow:
        status, detail = "output_limit", run.overflow
    elif report.get("timed_out"):
        status, detail = "timeout", f"killed after the {run.sb.timeout_s:g} s wall-clock limit"
    elif signal_status and status != "passed":
        status = signal_status
        detail = "CPU time limit reached" if status == "timeout" else "file size limit reached"
    elif status == "crashed" and exit_code is not None and exit_code < 0:
        detail = f"{detail} (killed by signal {-exit_code})"
    return Verdict(status, status == "passed", detail=detail, tests_passed=passed_n, tests_total=total, **common)
