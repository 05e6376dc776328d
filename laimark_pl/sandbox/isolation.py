"""Linux isolation primitives for the process backend (namespaces, a minimal root, limits, uids).

Expensive pieces (network/mount/IPC/UTS namespaces and the read-only minimal root filesystem)
are set up once per worker by `WorkerJail.enter`; per execution a forked child only calls
`confine_child` (chroot, fresh scratch dir, rlimits, uid drop, empty environment), and the
worker calls `WorkerJail.remove_ipc` afterwards (IPC objects outlive the processes that made
them; a fresh IPC namespace per execution would cost ~0.2 CPU ms, this check ~5 us).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import resource
import signal
import site
import sys
from dataclasses import dataclass, field

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38

UID_BASE = 61000  # worker i runs its tester as UID_BASE + 2i and the candidate as UID_BASE + 2i + 1
MAX_UID_PAIRS = 2000
UID_LOCK_DIR = "/run/laimark-sandbox" if os.access("/run", os.W_OK) else "/tmp/laimark-sandbox-uids"
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
JAIL_ROOT = "/tmp/laimark-jail"  # inside the worker's private mount namespace only
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
_ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf",
              "/etc/mime.types", "/etc/os-release")
_DEV_FILES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")

_libc = ctypes.CDLL(None, use_errno=True)  # the C library the interpreter is linked against
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


class IsolationError(OSError):
    """The kernel refused a namespace or mount."""


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise IsolationError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [None if s is None else s.encode() for s in (source, target, fstype, data)]
    _check(_libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]), f"mount {target}")


def prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, arg, 0, 0, 0), f"prctl {option}")


@dataclass
class Limits:
    """Per-execution resource limits."""

    cpu_s: int = 6
    memory_mb: int = 512
    max_processes: int = 32
    max_file_bytes: int = 64 << 20
    max_open_files: int = 256
    scratch_mb: int = 64


@dataclass
class WorkerJail:
    """The isolation a worker sets up once and every execution child inherits."""

    slot: int
    isolate: bool = True
    limits: Limits = field(default_factory=Limits)
    scratch_dir: str = ""  # per-execution working directory (emptied after every run)
    scratch_parent: str = ""  # worker-owned dir holding scratch_dir (plain mode; removed at exit)
    chroot: str | None = None
    drop_uids: bool = False
    degraded: list[str] = field(default_factory=list)
    nproc_base: int = 0  # processes this user already has (RLIMIT_NPROC without a private uid)
    user_namespace: bool = False  # isolation from an unprivileged user namespace (caps dropped per child)
    private_ipc: bool = False  # this worker has an IPC namespace of its own (every object in it is ours)
    mqueue_dir: str = ""  # where this worker sees its IPC namespace's POSIX message queues

    uid_index: int = -1  # host-wide unique index of this worker's uid pair (see `claim_uid_index`)
    cgroup: str = ""  # this worker's memory cgroup directory (root only)
    _uid_lock: int = -1

    @property
    def tester_uid(self) -> int:
        return UID_BASE + 2 * self.uid_index

    @property
    def candidate_uid(self) -> int:
        return UID_BASE + 2 * self.uid_index + 1

    def claim_uid_index(self) -> None:
        """Take the lowest uid pair no other live worker on this host holds (an ``flock`` kept
        for this process's lifetime), so that killing "every process of my uid" never touches
        another sandbox's executions."""
        os.makedirs(UID_LOCK_DIR, mode=0o700, exist_ok=True)
        for index in range(MAX_UID_PAIRS):
            fd = os.open(f"{UID_LOCK_DIR}/{index}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self.uid_index, self._uid_lock = index, fd
            return
        raise IsolationError(0, f"all {MAX_UID_PAIRS} sandbox uid pairs are in use")

    def enter(self) -> None:
        """Set up namespaces and the minimal root; record in `degraded` anything refused (the
        parent turns that into a warning)."""
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        if not self.isolate:
            self._plain_scratch()
            return
        if os.geteuid() != 0:
            self._enter_unprivileged()
            return
        self.claim_uid_index()
        self._limit_memory()
        try:
            unshare(CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS)
        except IsolationError as exc:
            self._degrade(f"namespaces refused ({exc.strerror}): no network or filesystem isolation, "
                          "POSIX message queues of the sandbox uids may outlive an execution")
            self.drop_uids = True
            self._plain_scratch()
            return
        self.drop_uids = self.private_ipc = True
        try:
            self._build_root()
        except OSError as exc:
            self._degrade(f"minimal root filesystem refused ({exc}): host files are readable by the "
                          "sandbox uid where permissions allow")
            self._plain_scratch()

    def _limit_memory(self) -> None:
        """Move this worker into a memory cgroup of its own, so that all executions together (a
        fork bomb of memory hogs included) stay within ~2 x memory_mb + scratch_mb."""
        limit = (2 * self.limits.memory_mb + self.limits.scratch_mb + 64) << 20
        try:
            self.cgroup = _create_memory_cgroup(f"laimark-sandbox-{self.uid_index}", limit)
        except OSError as exc:
            self._degrade(f"no memory cgroup ({exc}): memory is limited per process only "
                          "(RLIMIT_AS x max_processes)")

    def leave_cgroup(self) -> None:
        """Move back to the parent cgroup and remove ours (on worker exit)."""
        if not self.cgroup:
            return
        try:
            with open(os.path.join(os.path.dirname(self.cgroup), "cgroup.procs"), "w") as fh:
                fh.write(str(os.getpid()))
            os.rmdir(self.cgroup)
        except OSError:
            pass

    def _enter_unprivileged(self) -> None:
        """Without root: a user namespace (if the kernel allows it) gives the same network and
        filesystem isolation; executions keep our uid (no per-slot uids, see `confine_child`)."""
        uid, gid = os.getuid(), os.getgid()
        try:
            unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS)
            for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
                with open(f"/proc/self/{name}", "w") as fh:
                    fh.write(text)
        except (IsolationError, OSError) as exc:
            self._degrade(f"not root and user namespaces refused ({exc}): no network/filesystem isolation, "
                          "no per-execution uids (only temp dirs, rlimits and tree killing apply)")
            self._plain_scratch()
            return
        self.user_namespace = self.private_ipc = True
        self._degrade("not running as root: executions share your uid (RLIMIT_NPROC counts all your "
                      "processes; leftovers are found by process-tree scan) and memory is limited per "
                      "process only")
        try:
            self._build_root(owner=uid)
        except OSError as exc:
            self._degrade(f"minimal root filesystem refused ({exc}): your files are readable")
            self._plain_scratch()

    def _degrade(self, message: str) -> None:
        self.degraded.append(message)  # reported to the parent, which warns (once per sandbox)

    def _plain_scratch(self) -> None:
        import tempfile

        self.scratch_parent = tempfile.mkdtemp(prefix=f"laimark-sandbox-{self.slot}-")
        self.scratch_dir = self.scratch_parent
        os.chmod(self.scratch_dir, 0o700)
        if self.drop_uids:
            # The candidate (another uid) owns its scratch dir, never the dir holding it: it cannot
            # swap the scratch dir for a symlink that the worker's (root) cleanup would follow.
            os.chmod(self.scratch_parent, 0o711)
            self.scratch_dir = os.path.join(self.scratch_parent, "work")
            os.mkdir(self.scratch_dir, 0o700)
            os.chown(self.scratch_dir, self.candidate_uid, self.candidate_uid)
        else:
            self.nproc_base = _user_process_count()

    def _build_root(self, owner: int | None = None) -> None:
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        root = JAIL_ROOT
        os.makedirs(root, exist_ok=True)
        mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=755")
        bound: list[str] = []
        for path in _SYSTEM_DIRS:
            if os.path.islink(path):
                os.symlink(os.readlink(path), root + path)
            elif os.path.isdir(path):
                self._bind(path, root, bound)
        for path in _python_dirs():
            if not any(path == b or path.startswith(b.rstrip("/") + "/") for b in bound):
                self._bind(path, root, bound)
        for path in (*_ETC_FILES, *_DEV_FILES):
            if os.path.exists(path):
                self._bind(path, root, bound, is_file=True)
        os.symlink("/tmp", root + "/dev/shm")  # POSIX semaphores/shared memory land in the scratch dir
        try:  # the IPC namespace's message queues, seen (and emptied) by the worker
            os.mkdir(root + "/dev/mqueue", 0o755)
            mount("mqueue", root + "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            self.mqueue_dir = "/dev/mqueue"
        except OSError as exc:
            self._degrade(f"no mqueue mount ({exc}): POSIX message queues may outlive an execution")
        scratch = root + "/tmp"
        os.makedirs(scratch)
        mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV,
              f"size={self.limits.scratch_mb}m,mode=700,uid={owner if owner is not None else self.candidate_uid},"
              f"gid={os.getgid() if owner is not None else self.candidate_uid}")
        mount(None, root, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        self.chroot, self.scratch_dir = root, "/tmp"

    @staticmethod
    def _bind(path: str, root: str, bound: list[str], is_file: bool = False) -> None:
        target = root + path
        _make_traversable_dirs(root, os.path.dirname(path) if is_file else path)
        if is_file:
            open(target, "a").close()
        mount(path, target, None, MS_BIND | MS_REC)
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID
        if not path.startswith("/dev/"):
            flags |= MS_NODEV
        mount(None, target, None, flags)
        bound.append(path)

    def rlimits(self, private_uid: bool) -> list[tuple[int, tuple[int, int]]]:
        """The (resource, (soft, hard)) limits of one execution child (computed once)."""
        key = "_rlimits_private" if private_uid else "_rlimits_shared"
        cached = self.__dict__.get(key)
        if cached is None:
            lim = self.limits
            nproc = lim.max_processes if private_uid else self.nproc_base + lim.max_processes
            cached = [_clamp(resource.RLIMIT_CPU, lim.cpu_s, lim.cpu_s + 1),
                      _clamp(resource.RLIMIT_AS, lim.memory_mb << 20),
                      _clamp(resource.RLIMIT_FSIZE, lim.max_file_bytes),
                      _clamp(resource.RLIMIT_NOFILE, lim.max_open_files),
                      _clamp(resource.RLIMIT_CORE, 0),
                      _clamp(resource.RLIMIT_NPROC, nproc)]
            self.__dict__[key] = cached
        return cached

    def scratch_path(self) -> str:
        """The scratch directory as seen by the worker itself (for cleaning)."""
        return self.chroot + self.scratch_dir if self.chroot else self.scratch_dir

    def remove_ipc(self) -> list[str]:
        """Remove the IPC objects executions left behind (System V shared memory, semaphores,
        message queues; POSIX message queues), called by the worker once every process of an
        execution is gone. In a private IPC namespace that is every object, found by a cheap
        count first; in the host's (namespaces refused) those the sandbox uids created. Without
        either (``isolate=False``: the container's server sweeps between batches) nothing.
        Returns what could not be removed."""
        problems: list[str] = []
        if self.private_ipc:
            if sysv_ipc_in_use():
                problems += remove_sysv_ipc()
        elif self.drop_uids:
            problems += remove_sysv_ipc(creators={self.candidate_uid, self.tester_uid})
        if self.mqueue_dir:
            path = (self.chroot or "") + self.mqueue_dir
            for entry in os.scandir(path):
                try:
                    os.unlink(entry.path)
                except OSError as exc:
                    problems.append(f"cannot remove message queue {entry.name}: {exc.strerror}")
        return problems


IPC_RMID, SHM_INFO, SEM_INFO, MSG_INFO = 0, 14, 19, 12
SYSV_IPC = {"shm": "shmctl", "sem": "semctl", "msg": "msgctl"}  # /proc/sysvipc table -> removal call
_ipc_info = ctypes.create_string_buffer(64)  # struct shm_info / seminfo / msginfo (the worker is single-threaded)


def sysv_ipc_in_use() -> bool:
    """Whether this IPC namespace holds any System V object (three syscalls, no /proc reads):
    ``shm_info.used_ids``, ``seminfo.semusz`` and ``msginfo.msgpool`` count them."""
    buf = _ipc_info
    for query, offset in ((lambda: _libc.shmctl(0, SHM_INFO, buf), 0),
                          (lambda: _libc.semctl(0, 0, SEM_INFO, buf), 28),
                          (lambda: _libc.msgctl(0, MSG_INFO, buf), 0)):
        if query() < 0 or int.from_bytes(buf.raw[offset:offset + 4], sys.byteorder):
            return True  # in use (or the kernel would not say: let the caller look)
    return False


def remove_sysv_ipc(creators: set[int] | None = None) -> list[str]:
    """Remove the System V shared-memory segments, semaphore sets and message queues of this
    IPC namespace: all of them, or those whose creator uid is in ``creators``. Returns what
    could not be removed."""
    problems = []
    for table, call in SYSV_IPC.items():
        try:
            with open(f"/proc/sysvipc/{table}") as handle:
                header, *rows = [line.split() for line in handle.read().splitlines() if line.strip()]
            id_col, cuid_col = 1, header.index("cuid")
        except (OSError, ValueError):
            continue
        for row in rows:
            if creators is not None and int(row[cuid_col]) not in creators:
                continue
            ipc_id = int(row[id_col])
            args = (ipc_id, 0, IPC_RMID, None) if table == "sem" else (ipc_id, IPC_RMID, None)
            if getattr(_libc, call)(*args) != 0:
                problems.append(f"cannot remove System V {table} {ipc_id}: {os.strerror(ctypes.get_errno())}")
    return problems


def _create_memory_cgroup(name: str, limit_bytes: int) -> str:
    """Create (or reuse) a memory cgroup below our own, limit it, move this process into it."""
    with open("/proc/self/cgroup") as fh:
        lines = [line.rstrip("\n").split(":", 2) for line in fh]
    v1 = next((path for _, ctrls, path in lines if "memory" in ctrls.split(",")), None)
    if v1 is not None and os.path.isdir("/sys/fs/cgroup/memory"):
        group = f"/sys/fs/cgroup/memory{v1.rstrip('/')}/{name}"
        files = (("memory.limit_in_bytes", limit_bytes), ("memory.memsw.limit_in_bytes", limit_bytes))
    else:
        v2 = next((path for hier, _, path in lines if hier == "0"), None)
        parent = f"/sys/fs/cgroup{(v2 or '').rstrip('/')}"
        with open(f"{parent}/cgroup.subtree_control") as fh:
            if "memory" not in fh.read().split():
                raise OSError(f"the memory controller is not enabled below {parent}")
        group = f"{parent}/{name}"
        files = (("memory.max", limit_bytes), ("memory.swap.max", 0))
    os.makedirs(group, exist_ok=True)
    for filename, value in files:
        if os.path.exists(f"{group}/{filename}"):
            with open(f"{group}/{filename}", "w") as fh:
                fh.write(str(value))
    with open(f"{group}/cgroup.procs", "w") as fh:
        fh.write(str(os.getpid()))
    return group


def _make_traversable_dirs(root: str, path: str) -> None:
    """Create ``root + path`` (and parents) as execute-only dirs: traversable, not listable
    (``/root`` holding a pyenv Python shows nothing but lets the interpreter's path resolve)."""
    current = root
    for part in path.strip("/").split("/"):
        if not part:
            continue
        current = f"{current}/{part}"
        if not os.path.lexists(current):
            os.mkdir(current)
            os.chmod(current, 0o711)


def _python_dirs() -> list[str]:
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
            os.path.dirname(os.path.realpath(sys.executable))}
    try:
        dirs.update(site.getsitepackages())
    except AttributeError:  # some virtualenv layouts
        pass
    return sorted(d for d in dirs if d and os.path.isdir(d) and d != "/")


def confine_child(jail: WorkerJail, uid: int | None, tmp_home: bool) -> None:
    """Per-execution confinement of a freshly forked child (called before any payload is read)."""
    os.setsid()
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if jail.cgroup:
        try:  # out of memory in the worker's cgroup: executions go first
            fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
            try:
                os.write(fd, b"1000")
            finally:
                os.close(fd)
        except OSError:
            pass
    if jail.chroot:
        os.chroot(jail.chroot)
    os.chdir(jail.scratch_dir if tmp_home else "/")
    for which, pair in jail.rlimits(uid is not None and jail.drop_uids):
        resource.setrlimit(which, pair)
    if jail.drop_uids and uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    if jail.user_namespace:
        drop_capabilities()  # the namespace's creator holds every capability inside it
    # PR_SET_NO_NEW_PRIVS is already set: the worker sets it once (`forbid_new_privileges`),
    # fork inherits it and nothing can clear it.
    if not tmp_home:
        _check(_libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl(DUMPABLE)")


def forbid_new_privileges() -> None:
    """Set PR_SET_NO_NEW_PRIVS on this process: no execve() (of a setuid binary or a file with
    capabilities) by it or any descendant can gain privileges. Irrevocable and inherited by
    every fork, so a worker calls it once for all its execution children."""
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities() -> None:
    """Clear this process's effective, permitted and inheritable capability sets."""
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")
    for cap in range(64):  # and the bounding set, so nothing can come back
        if _libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            break


def _clamp(which: int, soft: int, hard: int | None = None) -> tuple[int, tuple[int, int]]:
    hard = soft if hard is None else hard
    _, cur_hard = resource.getrlimit(which)
    if cur_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, cur_hard), min(hard, cur_hard)
    return which, (soft, hard)


def child_environment(jail: WorkerJail) -> None:
    """Replace the worker's environment with the allow-listed one its children inherit."""
    os.environ.clear()
    os.environ.update(PATH=SAFE_PATH, HOME=jail.scratch_dir, TMPDIR=jail.scratch_dir, LANG="C.UTF-8",
                      PYTHONIOENCODING="utf-8")
    import tempfile

    tempfile.tempdir = None  # forget a cached temp dir: children resolve TMPDIR afresh


def _user_process_count() -> int:
    uid = os.getuid()
    count = 0
    try:
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    if entry.stat().st_uid == uid:
                        count += len(os.listdir(f"/proc/{entry.name}/task"))
                except OSError:
                    continue
    except OSError:
        return 4096
    return count


def kill_uid(uid: int) -> None:
    """SIGKILL every process of ``uid`` (one kill(-1) pass; new forks cannot slip through)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setresuid(uid, uid, uid)
            os.kill(-1, signal.SIGKILL)
        except BaseException:
            pass
        os._exit(0)
    os.waitpid(pid, 0)


def kill_descendants(root_pid: int) -> int:
    """SIGKILL every descendant of ``root_pid`` (found via /proc); returns how many were found."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
            parents[int(entry.name)] = int(stat[stat.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    doomed, frontier = set(), {root_pid}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier and pid not in doomed}
        doomed |= frontier
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return len(doomed)
