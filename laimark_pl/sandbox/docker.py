"""Docker backend: one hardened, long-lived container runs the process pool for the sandbox's life.

    from laimark_pl.sandbox import create, Program
    with create("docker", workers=2, timeout_s=5.0, memory_mb=512) as sandbox:
        verdicts = sandbox.check([Program(code="def f(x): return x", tests="assert f(1) == 1")])

The container has no network, a read-only root filesystem with a size-capped ``/tmp`` tmpfs, equal
memory and memory+swap limits, a pids limit, a CPU quota, no capabilities, no-new-privileges, uid
65534 and an environment of ``PATH`` (plus Docker's ``HOSTNAME``) only. Inside it,
`laimark_pl.sandbox.server` runs the same pre-forked pool as the process backend and answers
over a unix socket that the host listens on in a private temp dir, bind-mounted read-only into
the container; the host accepts exactly one connection (the server's) and removes the socket.

If the container dies or stops answering mid-batch it is restarted, and the lost batch is retried
in halves so that one program that kills its container only costs itself a "crashed" verdict.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Sequence
from pathlib import Path

from laimark_pl.sandbox.image import PYTHON_LABEL, SERVER_BOOTSTRAP, SOCKET_MOUNT, build_image
from laimark_pl.sandbox.process import SandboxError
from laimark_pl.sandbox.server import (
    PROTOCOL_VERSION,
    ConnectionClosedError,
    ProtocolError,
    recv_frame,
    send_frame,
)
from laimark_pl.sandbox.types import Program, Verdict, program_to_dict, verdict_from_dict

CONTAINER_LABEL = "org.laimark.sandbox"
SOCKET_NAME = "host.sock"
SERVER_OVERHEAD_MB = 256  # server + idle workers + shared memory, on top of the executions' budget
PIDS_OVERHEAD = 64  # tini, server, workers, on top of the executions' processes
ENGINE_HELP = (
    "Start one: as root, `bash .ci/docker-setup.sh` (installs docker.io if needed and starts dockerd), "
    "or `apt-get install -y docker.io && dockerd &`, or `systemctl start docker`; "
    "a non-root user needs access to /var/run/docker.sock (the `docker` group) or DOCKER_HOST."
)


class SandboxUnavailableError(SandboxError):
    """No Docker engine is reachable, or the sandbox container cannot be started."""


class _ContainerLostError(Exception):
    """The container died or stopped answering; ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def docker_client(timeout_s: float = 120.0):
    """A connected ``docker.DockerClient`` (from the environment), or `SandboxUnavailableError`."""
    try:
        import docker
    except ImportError as exc:
        raise SandboxUnavailableError("the Docker backend needs the `docker` package: pip install docker") from exc
    try:
        client = docker.from_env(timeout=int(timeout_s))
        client.ping()
    except docker.errors.DockerException as exc:
        raise SandboxUnavailableError(f"no Docker engine is reachable ({exc}). {ENGINE_HELP}") from exc
    return client


class _Resources:
    """What a running sandbox holds; released by `close()` or, as a last resort, by the finalizer."""

    def __init__(self) -> None:
        self.container = None
        self.conn: socket.socket | None = None
        self.socket_dir: str | None = None

    def release(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.container is not None:
            try:
                self.container.remove(force=True)
            except Exception:  # already gone, or the engine went away: nothing left to free
                pass
            self.container = None
        if self.socket_dir is not None:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
            self.socket_dir = None


class DockerSandbox:
    """The `Sandbox` protocol over one hardened container running the process pool.

    Args:
        workers: parallel executions (default: the engine's CPU count).
        timeout_s: wall-clock limit of one execution.
        memory_mb: memory limit of one execution.
        image: image to run (default: the locally built ``laimark-sandbox:<version>-<hash>``,
            built on first use); must be one that `laimark_pl.sandbox.image` built.
        cpus: CPU quota of the container (default: ``workers``, at most the engine's CPUs).
        max_processes: processes/threads one execution may have.
        max_output_bytes: stdout/stderr bytes one execution may produce.
        scratch_mb: size of the container's ``/tmp`` tmpfs (every execution's scratch).
        container_memory_mb: memory (= memory+swap) limit of the whole container (default:
            ``workers * memory_mb + scratch_mb + 256``).
        start_timeout_s: how long the container may take to start and connect.
        deadline_slack_s: fixed part of a batch's deadline (see `batch_deadline_s`), after which
            the container counts as hung and is restarted.
        max_restarts: container restarts one `check` may spend isolating programs that kill it.
        client: a ``docker.DockerClient`` (default: from the environment).
    """

    def __init__(
        self,
        workers: int | None = None,
        timeout_s: float = 5.0,
        memory_mb: int = 512,
        *,
        image: str | None = None,
        cpus: float | None = None,
        max_processes: int = 32,
        max_output_bytes: int = 1 << 20,
        scratch_mb: int = 256,
        container_memory_mb: int | None = None,
        start_timeout_s: float = 60.0,
        deadline_slack_s: float = 15.0,
        max_restarts: int = 8,
        client=None,
    ) -> None:
        if timeout_s <= 0 or memory_mb <= 0 or scratch_mb <= 0 or max_processes <= 0:
            raise ValueError("timeout_s, memory_mb, scratch_mb and max_processes must be positive")
        self._client = client or docker_client()
        if not str(getattr(self._client.api, "base_url", "")).startswith("http+docker://localhost"):
            raise SandboxUnavailableError(
                f"the Docker backend needs a local engine reached through a unix socket (it bind-mounts a "
                f"host directory); this client talks to {self._client.api.base_url}"
            )
        engine_cpus = int(self._client.info().get("NCPU") or os.cpu_count() or 1)
        self.workers = int(workers or engine_cpus)
        if self.workers <= 0:
            raise ValueError(f"workers must be positive, got {workers}")
        self.timeout_s = float(timeout_s)
        self.memory_mb = int(memory_mb)
        self.cpus = float(cpus) if cpus else float(min(self.workers, engine_cpus))
        self.scratch_mb = int(scratch_mb)
        self.container_memory_mb = int(
            container_memory_mb or self.workers * self.memory_mb + self.scratch_mb + SERVER_OVERHEAD_MB
        )
        self.pids_limit = self.workers * (max_processes + 2) + PIDS_OVERHEAD
        self.start_timeout_s = float(start_timeout_s)
        self.deadline_slack_s = float(deadline_slack_s)
        self.max_restarts = int(max_restarts)
        self.server_options = {
            "workers": self.workers,
            "timeout_s": self.timeout_s,
            "memory_mb": self.memory_mb,
            "max_processes": int(max_processes),
            "max_output_bytes": int(max_output_bytes),
        }
        self.image = image or build_image(self._client)
        self._python = self._image_python(self.image)
        self.restarts = 0  # containers started after the first (crash recovery)
        self._closed = False
        self._lock = threading.Lock()  # one batch at a time on the one connection
        self._resources = _Resources()
        self._finalizer = weakref.finalize(self, self._resources.release)
        _remove_exited_containers(self._client)
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    # -- public API ---------------------------------------------------------------------------

    @property
    def container_id(self) -> str | None:
        """Id of the running container (changes after a restart)."""
        container = self._resources.container
        return container.id if container is not None else None

    @property
    def worker_pids(self) -> list[int]:
        """Host process ids of the in-container server and its workers (for monitoring and benchmarks:
        like `ProcessSandbox.worker_pids`, their CPU times cover every execution)."""
        container = self._resources.container
        if container is None:
            return []
        listing = container.top()
        pid_column = listing["Titles"].index("PID")
        return [int(row[pid_column]) for row in listing["Processes"] if "docker-init" not in row[-1]]

    def check(self, programs: Sequence[Program], *, progress: bool | str = False) -> list[Verdict]:
        """Run every program (in parallel inside the container); verdicts in input order.

        ``progress``: show a progress bar (a string is used as its description); the batch then
        travels in chunks of ``8 * workers`` programs.
        """
        if self._closed:
            raise SandboxError("the sandbox is closed")
        programs = list(programs)
        if progress and len(programs) > 8 * self.workers:
            from tqdm.auto import tqdm

            chunk = 8 * self.workers
            verdicts_: list[Verdict] = []
            desc = progress if isinstance(progress, str) else "sandbox"
            with tqdm(total=len(programs), desc=desc, unit="prog") as bar:
                for start in range(0, len(programs), chunk):
                    verdicts_ += self.check(programs[start : start + chunk])
                    bar.update(len(programs[start : start + chunk]))
            return verdicts_
        verdicts: list[Verdict | None] = [None] * len(programs)
        runnable: list[int] = []
        for index, program in enumerate(programs):
            problem = _invalid_program(program)
            if problem:
                verdicts[index] = Verdict(status="error", passed=False, detail=problem)
            else:
                runnable.append(index)
        with self._lock:
            results = self._run([programs[i] for i in runnable], [self.max_restarts])
        for index, verdict in zip(runnable, results, strict=True):
            verdicts[index] = verdict
        return verdicts  # type: ignore[return-value]

    def close(self) -> None:
        """Stop and remove the container (idempotent)."""
        self._closed = True
        if hasattr(self, "_finalizer"):
            self._finalizer()

    def __enter__(self) -> DockerSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- batches and recovery -----------------------------------------------------------------

    def batch_deadline_s(self, size: int) -> float:
        """How long a batch of ``size`` may take before the container counts as hung."""
        rounds = math.ceil(size / self.workers)
        return self.deadline_slack_s + rounds * (2 * self.timeout_s + 2.0)

    def _run(self, batch: list[Program], budget: list[int]) -> list[Verdict]:
        if not batch:
            return []
        try:
            return self._roundtrip(batch)
        except _ContainerLostError as lost:
            self._restart()
            if len(batch) == 1 or budget[0] <= 0:
                return [_lost_verdict(lost.reason) for _ in batch]
            budget[0] -= 1
            middle = len(batch) // 2
            return self._run(batch[:middle], budget) + self._run(batch[middle:], budget)

    def _roundtrip(self, batch: list[Program]) -> list[Verdict]:
        conn = self._resources.conn
        if conn is None:
            raise _ContainerLostError("the sandbox container is not running")
        deadline = time.monotonic() + self.batch_deadline_s(len(batch))
        try:
            send_frame(conn, {"op": "check", "programs": [program_to_dict(p) for p in batch]}, deadline)
            reply = recv_frame(conn, deadline)
        except TimeoutError:
            raise _ContainerLostError(
                f"the sandbox container gave no answer within {self.batch_deadline_s(len(batch)):.0f}s"
            ) from None
        except (OSError, ConnectionClosedError, ProtocolError) as exc:
            raise _ContainerLostError(self._describe_loss(exc)) from None
        if not reply.get("ok"):
            detail = f"sandbox server: {reply.get('error', 'unknown error')}"
            return [Verdict(status="error", passed=False, detail=detail) for _ in batch]
        raw = reply.get("verdicts")
        if not isinstance(raw, list) or len(raw) != len(batch):
            raise _ContainerLostError("the sandbox server answered with the wrong number of verdicts")
        verdicts = [verdict_from_dict(item) for item in raw]
        if reply.get("dirty"):  # something survived the sweep: the next batch gets a fresh container
            warnings.warn(f"sandbox container could not be cleaned ({reply['dirty']}); restarting it", stacklevel=3)
            self._restart()
        return verdicts

    def _describe_loss(self, exc: BaseException) -> str:
        container = self._resources.container
        if container is None:
            return f"sandbox connection lost ({exc})"
        try:
            container.reload()
            state = container.attrs.get("State", {})
            logs = container.logs(tail=5).decode("utf-8", "replace").strip()
        except Exception:
            return f"sandbox container vanished ({exc})"
        summary = f"sandbox container {state.get('Status')} (exit code {state.get('ExitCode')}"
        if state.get("OOMKilled"):
            summary += ", killed for memory"
        summary += ")"
        return f"{summary}: {logs[-400:]}" if logs else summary

    def _restart(self) -> None:
        self._resources.release()
        self.restarts += 1
        self._start()

    # -- container life -----------------------------------------------------------------------

    def _start(self) -> None:
        resources = self._resources
        resources.socket_dir = tempfile.mkdtemp(prefix="laimark-sandbox-")  # 0700: host users stay out
        mount = Path(resources.socket_dir) / "mount"
        mount.mkdir()
        mount.chmod(0o755)
        socket_path = mount / SOCKET_NAME
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(socket_path))
            socket_path.chmod(0o666)  # the container's uid 65534 must be able to connect
            listener.listen(1)
            try:
                resources.container = self._client.containers.run(**self._container_config(mount))
            except Exception as exc:
                raise SandboxUnavailableError(f"cannot start the sandbox container from {self.image}: {exc}") from exc
            deadline = time.monotonic() + self.start_timeout_s
            resources.conn = self._accept(listener, deadline)
        finally:
            listener.close()
            socket_path.unlink(missing_ok=True)  # nobody else may connect, ever
        try:
            hello = recv_frame(resources.conn, deadline)
        except (OSError, EOFError, ProtocolError) as exc:
            raise SandboxUnavailableError(f"sandbox server did not say hello: {self._describe_loss(exc)}") from exc
        if hello.get("hello") != PROTOCOL_VERSION:
            raise SandboxUnavailableError(
                f"sandbox server speaks protocol {hello.get('hello')!r}, not {PROTOCOL_VERSION}"
            )

    def _accept(self, listener: socket.socket, deadline: float) -> socket.socket:
        listener.settimeout(0.2)
        container = self._resources.container
        while time.monotonic() < deadline:
            try:
                conn, _ = listener.accept()
                return conn
            except TimeoutError:
                container.reload()
                if container.status in ("exited", "dead"):
                    raise SandboxUnavailableError(
                        f"sandbox container exited while starting: {self._describe_loss(RuntimeError('exited'))}"
                    ) from None
        raise SandboxUnavailableError(f"sandbox server did not connect within {self.start_timeout_s:.0f}s")

    def _container_config(self, mount: Path) -> dict:
        from docker.types import LogConfig, Ulimit

        command = [
            self._python, "-I", "-B", "-X", "utf8", "-c", SERVER_BOOTSTRAP,
            "--connect", f"{SOCKET_MOUNT}/{SOCKET_NAME}",
            "--options", json.dumps(self.server_options),
        ]  # fmt: skip
        memory = f"{self.container_memory_mb}m"
        return {
            "image": self.image,
            "command": command,
            "detach": True,
            "init": True,  # tini as pid 1 reaps orphans
            "user": "65534:65534",
            "environment": {},
            "working_dir": "/tmp",
            "hostname": "sandbox",
            "network_mode": "none",
            "ipc_mode": "none",  # private IPC namespace and no /dev/shm
            "read_only": True,
            "tmpfs": {"/tmp": f"rw,nosuid,nodev,noexec,size={self.scratch_mb}m,mode=1777"},
            "volumes": {str(mount): {"bind": SOCKET_MOUNT, "mode": "ro"}},
            "mem_limit": memory,
            "memswap_limit": memory,
            "pids_limit": self.pids_limit,
            "nano_cpus": int(self.cpus * 1e9),
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "ulimits": [Ulimit(name="core", soft=0, hard=0)],
            "log_config": LogConfig(type="json-file", config={"max-size": "1m", "max-file": "1"}),
            "labels": {CONTAINER_LABEL: "1", f"{CONTAINER_LABEL}.host_pid": str(os.getpid())},
        }

    def _image_python(self, image: str) -> str:
        import docker.errors

        try:
            labels = self._client.images.get(image).labels or {}
        except docker.errors.ImageNotFound as exc:
            raise SandboxUnavailableError(
                f"image {image} not found; build it with `laimark sandbox build-image`"
            ) from exc
        if PYTHON_LABEL not in labels:
            raise SandboxUnavailableError(f"image {image} was not built by laimark (no {PYTHON_LABEL} label)")
        return labels[PYTHON_LABEL]


def _invalid_program(program: object) -> str:
    if not isinstance(program, Program):
        return f"expected a Program, got {type(program).__name__}"
    for name in ("code", "tests"):
        if not isinstance(getattr(program, name), str):
            return f"Program.{name} must be a string, got {type(getattr(program, name)).__name__}"
    if program.entry_point is not None and not isinstance(program.entry_point, str):
        return f"Program.entry_point must be a string or None, got {type(program.entry_point).__name__}"
    return ""


def _lost_verdict(reason: str) -> Verdict:
    return Verdict(status="crashed", passed=False, detail=reason, extra={"container_lost": True})


def _remove_exited_containers(client) -> None:
    """Remove sandbox containers left behind by earlier (crashed) host processes."""
    try:
        for container in client.containers.list(all=True, filters={"label": CONTAINER_LABEL, "status": "exited"}):
            container.remove(force=True)
    except Exception:  # best effort: a concurrent sandbox may be removing the same one
        pass
