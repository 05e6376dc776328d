"""The Docker backend against a real engine: hardening, verdicts, recovery, bad input.

The hostile-program catalogue shared with the process backend lives in test_sandbox_hostile.py
(parametrised over both backends); this file covers what only the container adds.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from sandbox_programs import ipc_programs

from laimark_pl.sandbox import Program, create
from laimark_pl.sandbox.docker import CONTAINER_LABEL, DockerSandbox, SandboxUnavailableError, docker_client
from laimark_pl.sandbox.process import SandboxError

TIMEOUT_S = 2.0
DOUBLE = "def f(x):\n    return 2 * x\n"
HONEST = Program(DOUBLE, "assert f(3) == 6")
WRONG = Program("def f(x):\n    return x\n", "assert f(3) == 6")


@pytest.fixture(scope="module")
def sandbox():
    with create("docker", workers=2, timeout_s=TIMEOUT_S, memory_mb=256) as sb:
        yield sb


def probe(sandbox: DockerSandbox, body: str) -> dict:
    """Run ``body`` (which sets ``facts``) as an untrusted program; the facts come back via stdout."""
    code = "import json, os, sys\ndef f(x):\n    facts = {}\n"
    code += "".join(f"    {line}\n" for line in body.splitlines())
    code += "    print('FACTS' + json.dumps(facts))\n    return 'probed'\n"
    verdict = sandbox.check([Program(code, "assert f(0) == 'never'")])[0]
    assert not verdict.passed
    marker = verdict.stdout_tail.rfind("FACTS")
    assert marker >= 0, verdict
    return json.loads(verdict.stdout_tail[marker + len("FACTS") :].splitlines()[0])


# ------------------------------------------------------------------ the container


@pytest.mark.docker
def test_container_is_hardened(sandbox):
    container = docker_client().containers.get(sandbox.container_id)
    host = container.attrs["HostConfig"]
    config = container.attrs["Config"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["Privileged"] is False
    assert host["Memory"] == host["MemorySwap"] == sandbox.container_memory_mb << 20
    assert host["PidsLimit"] == sandbox.pids_limit
    assert host["NanoCpus"] == int(sandbox.cpus * 1e9)
    assert host["IpcMode"] == "none"
    assert "size=" in host["Tmpfs"]["/tmp"] and "noexec" in host["Tmpfs"]["/tmp"]
    assert all(m["RW"] is False for m in container.attrs["Mounts"])  # only the socket dir, read-only
    assert config["User"] == "65534:65534"
    assert sorted(v.split("=")[0] for v in config["Env"]) == ["PATH"]


@pytest.mark.docker
def test_programs_run_unprivileged_offline_and_see_no_host(sandbox):
    facts = probe(
        sandbox,
        f"""status = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)
facts['uid'] = os.getuid()
facts['cap_eff'] = int(status['CapEff'], 16)
facts['no_new_privs'] = status['NoNewPrivs'].strip()
facts['interfaces'] = sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:])
facts['host_file'] = os.path.exists({str(Path(__file__).resolve())!r})
facts['root_entries'] = sorted(os.listdir('/'))
facts['shm'] = os.path.isdir('/dev/shm') and os.access('/dev/shm', os.W_OK)
try:
    open('/usr/planted', 'w')
    facts['rootfs_writable'] = True
except OSError:
    facts['rootfs_writable'] = False""",
    )
    assert facts["uid"] == 65534
    assert facts["cap_eff"] == 0
    assert facts["no_new_privs"] == "1"
    assert facts["interfaces"] == ["lo"]
    assert facts["host_file"] is False
    assert "work" not in facts["root_entries"] and "home" not in facts["root_entries"]
    assert facts["shm"] is False
    assert facts["rootfs_writable"] is False


@pytest.mark.docker
def test_pool_cannot_be_ptraced_or_read_by_programs(sandbox):
    facts = probe(
        sandbox,
        """import ctypes
libc = ctypes.CDLL(None, use_errno=True)
targets = {'worker': os.getppid()}
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        if b'laimark_pl.sandbox.server' in open(f'/proc/{pid}/cmdline', 'rb').read():
            targets['server'] = int(pid)
    except OSError:
        pass
for name, pid in targets.items():
    facts[name + '_attach'] = libc.ptrace(16, pid, 0, 0) == 0
    for part in ('mem', 'environ', 'fd'):
        try:
            os.listdir(f'/proc/{pid}/fd') if part == 'fd' else open(f'/proc/{pid}/{part}', 'rb').read(1)
            facts[f'{name}_{part}'] = True
        except OSError:
            facts[f'{name}_{part}'] = False""",
    )
    assert set(facts) >= {"worker_attach", "server_attach", "server_mem", "worker_fd"}
    assert not any(facts.values()), facts


@pytest.mark.docker
def test_verdicts_come_back_in_order(sandbox):
    check = Program(DOUBLE, "def check(candidate):\n    assert candidate(2) == 4\n", "f")
    verdicts = sandbox.check([HONEST, WRONG, check, WRONG, HONEST])
    assert [v.status for v in verdicts] == ["passed", "failed", "passed", "failed", "passed"]
    assert all(v.duration_s > 0 for v in verdicts)


@pytest.mark.docker
def test_timeout_is_enforced_inside_the_container(sandbox):
    started = time.monotonic()
    verdicts = sandbox.check([Program("def f(x):\n    while True:\n        pass\n", "assert f(3) == 6"), HONEST])
    assert [v.status for v in verdicts] == ["timeout", "passed"]
    assert time.monotonic() - started < TIMEOUT_S + 3


@pytest.mark.docker
def test_timed_out_work_is_killed_inside_the_container(sandbox):
    escapee = (
        "import subprocess, sys\n"
        "def f(x):\n"
        "    for _ in range(3):\n"
        "        subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], start_new_session=True)\n"
        "    while True:\n"
        "        pass\n"
    )
    container = docker_client().containers.get(sandbox.container_id)
    before = len(container.top()["Processes"])
    assert before == 2 + sandbox.workers  # tini, the server, its workers
    assert len(sandbox.worker_pids) == 1 + sandbox.workers
    assert all(Path(f"/proc/{pid}").exists() for pid in sandbox.worker_pids)  # host pids
    (verdict,) = sandbox.check([Program(escapee, "assert f(3) == 6")])
    assert verdict.status == "timeout"
    commands = [row[-1] for row in container.top()["Processes"]]
    assert len(commands) == before and not any("sleep(600)" in c for c in commands), commands


PLANT, FIND = ipc_programs(0x4c41)


@pytest.mark.docker
def test_ipc_objects_do_not_persist_between_batches(sandbox):
    (planted,) = sandbox.check([Program(PLANT, "assert f(0) == [True, True, True, True]")])
    assert planted.passed, planted  # the plants really were made...
    (found,) = sandbox.check([Program(FIND, "assert f(0) == [False, False, False, False]")])
    assert found.passed, found  # ...and the next batch finds none of them


@pytest.mark.docker
@pytest.mark.parametrize(
    ("program", "needle"),
    [
        (Program("def f(x) return", "assert f(1) == 1"), "compile"),
        (Program("def f(x):\n    return x\n# \udcff", "assert f(1) == 1"), "UTF-8"),
        (Program("#" * (2 << 20) + "\n" + DOUBLE, "assert f(3) == 6"), "limit"),
        (Program(DOUBLE, "   \n"), "empty"),
        (Program(b"def f(x): return x", "assert f(1) == 1"), "code"),  # type: ignore[arg-type]
        (Program(DOUBLE, "assert f(3) == 6", entry_point=3), "entry_point"),  # type: ignore[arg-type]
        ("def f(x): return x", "Program"),
    ],
    ids=[
        "syntax-error",
        "lone-surrogate",
        "megabyte-source",
        "empty-tests",
        "bytes-code",
        "int-entry",
        "not-a-program",
    ],
)
def test_bad_input_gets_an_error_verdict_and_the_pool_keeps_serving(sandbox, program, needle):
    bad, good = sandbox.check([program, HONEST])
    assert bad.status == "error" and not bad.passed
    assert needle in bad.detail, bad
    assert good.passed


# ------------------------------------------------------------------ recovery


@pytest.mark.docker
def test_container_killed_from_outside_is_replaced(sandbox):
    client = docker_client()
    old_id, restarts = sandbox.container_id, sandbox.restarts
    client.containers.get(old_id).kill()
    verdicts = sandbox.check([HONEST, WRONG, HONEST])
    assert [v.status for v in verdicts] == ["passed", "failed", "passed"]
    assert sandbox.restarts > restarts and sandbox.container_id != old_id
    assert old_id not in {c.id for c in client.containers.list(all=True)}


KILL_EVERYTHING = """import os, signal
def f(x):
    for pid in os.listdir('/proc'):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
    return 2 * x
"""


@pytest.mark.docker
def test_a_program_that_kills_the_server_costs_only_itself(sandbox):
    restarts = sandbox.restarts
    verdicts = sandbox.check([HONEST, WRONG, Program(KILL_EVERYTHING, "assert f(3) == 6"), HONEST, WRONG])
    assert [v.status for v in verdicts] == ["passed", "failed", "crashed", "passed", "failed"]
    assert verdicts[2].extra.get("container_lost") is True
    assert sandbox.restarts > restarts
    assert sandbox.check([HONEST])[0].passed


@pytest.mark.docker
def test_a_hung_server_hits_the_batch_deadline():
    stop_server = KILL_EVERYTHING.replace("signal.SIGKILL", "signal.SIGSTOP")
    with DockerSandbox(workers=1, timeout_s=1.0, memory_mb=128, deadline_slack_s=1.0) as sb:
        started = time.monotonic()
        (verdict,) = sb.check([Program(stop_server, "assert f(3) == 6")])
        assert verdict.status == "crashed" and "no answer" in verdict.detail
        assert time.monotonic() - started < sb.batch_deadline_s(1) + 30
        assert sb.check([HONEST])[0].passed


@pytest.mark.docker
def test_progress_splits_the_batch_without_changing_verdicts(sandbox):
    programs = [HONEST, WRONG] * (8 * sandbox.workers)
    verdicts = sandbox.check(programs, progress="checking")
    assert [v.passed for v in verdicts] == [True, False] * (8 * sandbox.workers)


@pytest.mark.docker
def test_close_removes_the_container_and_is_idempotent():
    client = docker_client()
    sb = DockerSandbox(workers=1, timeout_s=1.0, memory_mb=128)
    container_id = sb.container_id
    assert client.containers.get(container_id).status == "running"
    sb.close()
    sb.close()
    assert container_id not in {c.id for c in client.containers.list(all=True)}
    with pytest.raises(SandboxError, match="closed"):
        sb.check([HONEST])


@pytest.mark.docker
def test_an_image_not_built_by_laimark_is_refused():
    with pytest.raises(SandboxUnavailableError, match="not found"):
        DockerSandbox(workers=1, image="laimark-sandbox:does-not-exist")


def test_no_engine_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such-docker.sock")
    with pytest.raises(SandboxUnavailableError, match="docker-setup.sh"):
        DockerSandbox(workers=1)


@pytest.mark.docker
def test_a_server_that_cannot_start_gives_a_clear_error_and_no_leftover():
    client = docker_client()
    ours = {"label": f"{CONTAINER_LABEL}.host_pid={os.getpid()}"}
    before = {c.id for c in client.containers.list(all=True, filters=ours)}
    with pytest.raises(SandboxUnavailableError, match="memory_mb must be >= 64"):
        DockerSandbox(workers=1, memory_mb=32)  # the in-container pool refuses it
    assert {c.id for c in client.containers.list(all=True, filters=ours)} <= before
