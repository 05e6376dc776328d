"""Building the Docker sandbox's image from this host's Python, with no registry."""

from __future__ import annotations

import re
import stat
import tarfile
import time

import pytest
import typer
from typer.testing import CliRunner

from laimark_pl.sandbox.image import (
    IMAGE_REPOSITORY,
    PACKAGE_ROOT,
    PYTHON_LABEL,
    build_image,
    host_python,
    image_tag,
    sandbox_sources,
    write_rootfs,
)


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory):
    path = tmp_path_factory.mktemp("image") / "rootfs.tar"
    count = write_rootfs(path, progress=False)
    with tarfile.open(path) as tar:
        yield {m.name: m for m in tar.getmembers()}, path, count


def test_tag_names_the_version_and_a_fingerprint():
    tag = image_tag()
    assert re.fullmatch(rf"{IMAGE_REPOSITORY}:[\w.+-]+-[0-9a-f]{{12}}", tag)
    assert image_tag() == tag  # stable while nothing changes


def test_rootfs_holds_the_interpreter_its_libraries_and_the_server(rootfs):
    members, _, _ = rootfs
    python = host_python()
    executable = members[str(python.executable).lstrip("/")]
    assert stat.S_IMODE(executable.mode) == 0o711  # execute-only: its processes start non-dumpable
    assert any(re.search(r"(^|/)libc\.so\.6$", name) for name in members)
    assert any("ld-linux" in name for name in members)
    stdlib = str(python.stdlib).lstrip("/")
    for module in ("os.py", "json/__init__.py", "lib-dynload"):
        assert any(name.startswith(f"{stdlib}/{module}") for name in members), module
    package = f"{PACKAGE_ROOT.strip('/')}/laimark_pl/sandbox"
    assert f"{package}/server.py" in members and f"{package}/process.py" in members
    assert any(name.startswith(f"{package}/__pycache__/server.") for name in members)
    assert f"{package}/docker.py" not in members  # host-only modules stay out


def test_rootfs_leaves_out_packages_tests_and_the_rest_of_the_host(rootfs):
    members, path, _ = rootfs
    stdlib = str(host_python().stdlib).lstrip("/")
    assert not any(n.startswith(f"{stdlib}/site-packages/") for n in members)
    ours = [n for n in members if n.startswith(PACKAGE_ROOT.strip("/") + "/")]
    assert ours and all("/laimark_pl/" in n or n.endswith("/laimark_pl") for n in ours)
    for excluded in ("test", "idlelib", "ensurepip", "tkinter"):
        assert f"{stdlib}/{excluded}" not in members
    assert not any(n.endswith(".opt-1.pyc") for n in members)
    assert not any(n.startswith(("home/", "work/", "var/", "etc/shadow")) for n in members)
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())
    assert path.stat().st_size < 200 << 20


def test_rootfs_has_nobody_and_world_readable_files(rootfs):
    members, path, _ = rootfs
    with tarfile.open(path) as tar:
        passwd = tar.extractfile("etc/passwd").read().decode()
    assert "nobody:x:65534:65534:" in passwd
    executable = str(host_python().executable).lstrip("/")
    files = [m for m in members.values() if m.isfile() and m.name != executable]
    assert files and all(m.mode & 0o444 == 0o444 for m in files)
    assert all(m.mode & 0o555 == 0o555 for m in members.values() if m.isdir() and m.name != "tmp")


def test_sandbox_sources_are_stdlib_only_modules():
    sources = sandbox_sources()
    assert "laimark_pl/sandbox/server.py" in sources and "laimark_pl/__init__.py" in sources
    for name, text in sources.items():
        assert b"import docker" not in text and b"import typer" not in text, name


@pytest.mark.docker
def test_build_is_idempotent_and_force_rebuilds():
    from laimark_pl.sandbox.docker import docker_client

    client = docker_client()
    tag = build_image(client, progress=False)
    first = client.images.get(tag)
    started = time.monotonic()
    assert build_image(client, progress=False) == tag
    assert time.monotonic() - started < 5
    assert client.images.get(tag).id == first.id
    assert first.labels[PYTHON_LABEL] == str(host_python().executable)
    assert build_image(client, progress=False, force=True) == tag
    assert client.images.get(tag).id != first.id
    assert tag in [t for i in client.images.list(name=IMAGE_REPOSITORY) for t in i.tags]


@pytest.mark.docker
def test_image_python_runs_the_stdlib_as_nobody_offline():
    from laimark_pl.sandbox.docker import docker_client

    client = docker_client()
    tag = build_image(client, progress=False)
    script = (
        "import ctypes, sys, os, ssl, sqlite3, zlib, lzma, bz2, decimal, hashlib, uuid, json, socket, select\n"
        f"sys.path.insert(0, {PACKAGE_ROOT!r})\nimport laimark_pl.sandbox.server\n"
        "try:\n    open(sys.executable, 'rb')\n    readable = 1\nexcept PermissionError:\n    readable = 0\n"
        "print(os.getuid(), readable, ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))\n"
    )
    output = client.containers.run(
        tag,
        [str(host_python().executable), "-I", "-c", script],
        remove=True,
        network_mode="none",
        read_only=True,
        cap_drop=["ALL"],
        user="65534:65534",
    )
    uid, readable, dumpable = output.decode().split()
    assert (uid, readable, dumpable) == ("65534", "0", "0")


@pytest.mark.docker
def test_build_image_command_prints_the_tag():
    from laimark_pl.sandbox.cli import register

    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["sandbox", "build-image"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == image_tag()


def test_build_image_command_explains_a_missing_engine(monkeypatch, tmp_path):
    from laimark_pl.sandbox.cli import register

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["sandbox", "build-image"])
    assert result.exit_code == 2
    assert "no Docker engine is reachable" in result.output
