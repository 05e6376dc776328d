"""A sandbox worker: a small, fresh interpreter that forks one isolated child per execution.

Started by `ProcessSandbox` as ``python -c ... zygote.main(config)`` with one end of a
``SOCK_SEQPACKET`` socket. It sets up its jail once (namespaces, minimal root), preloads common
standard-library modules and then serves ``spawn`` requests: each request carries the pipe ends
the parent created (``job``, ``result``, ``stdout``, ``stderr``), so programs and tests flow
straight from the parent to the children and this process never holds them (a child forked
from it cannot find them in its memory). After the children finish (or the deadline passes, or
the parent asks), it kills every leftover process of the execution, empties the scratch
directory, removes the IPC objects it left and reports exit statuses.
"""

from __future__ import annotations

import fcntl
import gc
import json
import os
import random
import select
import shutil
import signal
import socket
import stat
import sys
import time
from typing import Any

from laimark_pl.sandbox import harness
from laimark_pl.sandbox.isolation import (
    PR_SET_DUMPABLE,
    Limits,
    WorkerJail,
    child_environment,
    confine_child,
    forbid_new_privileges,
    kill_descendants,
    kill_uid,
    prctl,
)
from laimark_pl.sandbox.wire import pack_report

# Imported once here, so that a program's ``import`` of them is a dictionary lookup in its child.
# Deliberately NOT ``threading`` (nor ``queue``, which imports it): it registers an at-fork hook
# that runs cold Python code in every child (~0.4 CPU ms per execution on our VM, more than
# importing it in the few programs that use threads).
PRELOAD = ("math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string", "random",
           "json", "typing", "dataclasses", "fractions", "decimal", "statistics", "hashlib", "datetime",
           "copy", "operator", "array", "textwrap", "unicodedata", "enum", "abc", "numbers", "struct",
           "tempfile", "io", "contextlib", "time", "types", "pathlib")


def main(config_json: str) -> None:
    config = json.loads(config_json)
    sock = socket.socket(fileno=config["fd"])
    jail = WorkerJail(slot=config["slot"], isolate=config["isolate"], limits=Limits(**config["limits"]))
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    jail.enter()
    forbid_new_privileges()  # inherited by every execution child
    if not jail.drop_uids:
        # Children share our uid: make this process (and them) impossible to ptrace or to read
        # through /proc/<pid>/mem for a same-uid process without CAP_SYS_PTRACE.
        prctl(PR_SET_DUMPABLE, 0)
    child_environment(jail)
    harness.prepare_stdio()
    jail.rlimits(True), jail.rlimits(False)  # computed once, inherited by every child
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    harness.warm_up()  # children inherit the harness's code already specialised (fewer COW writes)
    for _ in range(10):
        random.seed()  # likewise for random's at-fork hook, which reseeds every child
    sock.sendall(json.dumps({"ready": os.getpid(), "degraded": jail.degraded}).encode())
    gc.collect()
    gc.freeze()
    gc.disable()  # no collector passes touching (and un-sharing) the pages children inherit
    timeout_s = float(config["timeout_s"])
    # A tester execution is a ping-pong of its two children (one pipe round trip per call): on
    # one CPU a round trip costs ~30 µs of CPU, across two ~105 µs (cross-CPU wake-ups are
    # dear on virtual machines). Each worker keeps its pairs on "its" CPU of those allowed.
    allowed = sorted(os.sched_getaffinity(0))
    pair_cpu = {allowed[config["slot"] % len(allowed)]}
    try:
        while True:
            try:
                msg, fds, _, _ = socket.recv_fds(sock, 65536, 8)
            except (ConnectionError, OSError):
                break
            if not msg:
                break
            if msg == b"kill":  # for an execution that had already ended
                for fd in fds:
                    os.close(fd)
                continue
            report = _execute(jail, msg == b"tester", fds, sock, timeout_s, pair_cpu)
            try:
                sock.sendall(report)
            except OSError:
                break
    finally:
        _cleanup_scratch(jail)
        if jail.scratch_parent:
            shutil.rmtree(jail.scratch_parent, ignore_errors=True)
        jail.leave_cgroup()


def _execute(jail: WorkerJail, tester: bool, fds: list[int], sock: socket.socket, timeout_s: float,
             pair_cpu: set[int]) -> bytes:
    job_r, res_w, out_w, err_w = fds
    children: dict[str, int] = {}
    started = time.monotonic()
    try:
        if tester:
            to_cand_r, to_cand_w = os.pipe()
            from_cand_r, from_cand_w = os.pipe()
            children["candidate"] = _fork(jail, jail.candidate_uid, True, {
                1: out_w, 2: err_w, 3: to_cand_r, 4: from_cand_w}, harness.run_candidate, pair_cpu)
            children["tester"] = _fork(jail, jail.tester_uid, False, {
                1: out_w, 2: err_w, 3: job_r, 4: res_w, 5: to_cand_w, 6: from_cand_r}, harness.run_tester, pair_cpu)
            for fd in (to_cand_r, to_cand_w, from_cand_r, from_cand_w):
                os.close(fd)
        else:
            children["candidate"] = _fork(jail, jail.candidate_uid, True, {
                1: out_w, 2: err_w, 3: job_r, 4: res_w}, harness.run_candidate)
    finally:
        for fd in fds:
            os.close(fd)
    timed_out, killed_by_parent, statuses = _wait(jail, children, sock, started + timeout_s)
    leftovers = _reap_leftovers(jail)
    _cleanup_scratch(jail)
    for problem in jail.remove_ipc():  # shared memory etc. outlive processes: never the next run's
        os.write(2, f"laimark sandbox worker: {problem}\n".encode())
    return pack_report(statuses.get("candidate"), statuses.get("tester"), timed_out, killed_by_parent, leftovers)


def _fork(jail: WorkerJail, uid: int, candidate: bool, fd_map: dict[int, int], entry: Any,
          cpus: set[int] | None = None) -> int:
    pid = os.fork()
    if pid:
        return pid
    try:
        if cpus:
            os.sched_setaffinity(0, cpus)
        _install_fds(fd_map)
        confine_child(jail, uid, tmp_home=candidate)
        gc.enable()
        entry()
    except BaseException as exc:
        try:
            os.write(2, f"laimark sandbox: child setup failed: {exc!r}\n".encode())
        except OSError:
            pass
    os._exit(70)


def _install_fds(fd_map: dict[int, int]) -> None:
    """Make ``fd_map`` (target -> source) the only open descriptors, with /dev/null as stdin."""
    high = [(target, fcntl.fcntl(source, fcntl.F_DUPFD, 100)) for target, source in fd_map.items()]
    null = os.open("/dev/null", os.O_RDONLY)
    if null != 0:
        os.dup2(null, 0)
        os.close(null)
    for target, fd in high:
        os.dup2(fd, target)
    os.closerange(max(fd_map) + 1, 2**31 - 1)  # close_range(2): cheap however high


def _wait(jail: WorkerJail, children: dict[str, int], sock: socket.socket,
          deadline: float) -> tuple[bool, bool, dict[str, int | None]]:
    pidfds = {os.pidfd_open(pid): role for role, pid in children.items()}
    statuses: dict[str, int | None] = {role: None for role in children}
    poller = select.poll()
    for fd in pidfds:
        poller.register(fd, select.POLLIN)
    poller.register(sock.fileno(), select.POLLIN)
    timed_out = killed = False
    try:
        while any(s is None for s in statuses.values()):
            remaining = deadline - time.monotonic()
            if remaining <= 0 and not (timed_out or killed):
                timed_out = True
                _kill_all(jail)
            for fd, _ in poller.poll(max(0, remaining) * 1000 if not (timed_out or killed) else 200):
                if fd == sock.fileno():
                    # Only a "kill" (or the parent going away) concerns this execution; a
                    # queued request for the next one stays in the socket.
                    try:
                        msg = sock.recv(1024, socket.MSG_PEEK)
                        if msg == b"kill":
                            sock.recv(1024)
                    except OSError:  # the parent went away
                        msg = b""
                    else:
                        poller.unregister(fd)
                    if not msg or msg == b"kill":
                        killed = True
                        _kill_all(jail)
                    continue
                role = pidfds[fd]
                pid, status = os.waitpid(children[role], os.WNOHANG)
                if pid:
                    statuses[role] = os.waitstatus_to_exitcode(status)
                    poller.unregister(fd)
            if timed_out or killed:
                _kill_all(jail)
    finally:
        for fd in pidfds:
            os.close(fd)
    return timed_out, killed, statuses


def _kill_all(jail: WorkerJail) -> None:
    if jail.drop_uids:
        kill_uid(jail.candidate_uid)
        kill_uid(jail.tester_uid)
    else:
        kill_descendants(os.getpid())


def _reap_leftovers(jail: WorkerJail) -> int:
    """Reap orphans the execution left behind, killing live ones; returns how many were reaped."""
    reaped = 0
    give_up = time.monotonic() + 5.0
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid:
            reaped += 1
            continue
        _kill_all(jail)  # live processes remain: kill them all, then reap
        if time.monotonic() > give_up:
            return reaped
        time.sleep(0.002)


def _cleanup_scratch(jail: WorkerJail) -> None:
    path = jail.scratch_path()
    if not path:
        return
    if not jail.chroot and not os.path.isdir(path):  # removed from outside (a container's sweep)
        os.makedirs(path, mode=0o700, exist_ok=True)
        if jail.drop_uids:
            os.chown(path, jail.candidate_uid, jail.candidate_uid)
    for entry in os.scandir(path):
        full = os.path.join(path, entry.name)
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(full, onerror=_make_writable)
            else:
                os.unlink(full)
        except OSError:
            shutil.rmtree(full, ignore_errors=True)
    os.chmod(path, 0o700)


def _make_writable(func: Any, path: str, _exc: Any) -> None:
    """rmtree error handler: an execution made a directory unwritable. Never follows symlinks
    (every process of the execution is dead by now, so nothing can swap paths meanwhile)."""
    parent = os.path.dirname(path)
    try:
        if stat.S_ISDIR(os.lstat(parent).st_mode):
            os.chmod(parent, stat.S_IRWXU)
        mode = os.lstat(path).st_mode
        if stat.S_ISDIR(mode):
            os.chmod(path, stat.S_IRWXU)
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass


if __name__ == "__main__":
    main(sys.argv[1])
