"""Build the Docker sandbox's image locally, with no registry: a minimal root filesystem, imported.

The image holds only what the in-container server needs: this host's Python interpreter and
standard library (no site-packages, tests, IDLE, Tk or ensurepip), the shared libraries they link
against (resolved with ``ldd``), the dynamic loader, a two-line ``/etc/passwd`` with ``nobody``,
and the stdlib-only modules of ``laimark_pl.sandbox`` (under ``/opt/laimark``, with bytecode).
Python keeps its host path (its RUNPATH and prefix stay valid); every directory above it is
world-traversable in the image and nothing else of the host comes along. The interpreter binary
is execute-only, so every process started from it is non-dumpable (no same-uid ptrace). The tag
carries a fingerprint of those inputs and of this builder, so changing the sandbox's code or the
interpreter gives a new tag and a rebuild (older tags for the same interpreter are pruned).

    from laimark_pl.sandbox.image import build_image
    tag = build_image()          # "laimark-sandbox:0.1.0-<hash>", built once, then reused
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

IMAGE_REPOSITORY = "laimark-sandbox"
BUILDER_VERSION = "2"  # bump when the image layout changes outside this file
SOCKET_MOUNT = "/run/laimark"  # where the host's socket directory is bind-mounted
VERSION_LABEL = "org.laimark.sandbox.image"
PYTHON_LABEL = "org.laimark.sandbox.python"  # the interpreter the server runs with
PACKAGE_ROOT = "/opt/laimark"  # holds the image's laimark_pl (sandbox modules only)
# How the server starts: -I ignores PYTHON* variables and user site dirs, so put the package on
# sys.path by hand (a distribution's site dirs, e.g. Debian's dist-packages, vary).
SERVER_BOOTSTRAP = (
    f"import sys; sys.path.insert(0, {PACKAGE_ROOT!r}); from laimark_pl.sandbox.server import main; sys.exit(main())"
)

# Parts of the standard library the sandbox never needs (and the host's installed packages).
EXCLUDED_STDLIB_NAMES = frozenset(
    {
        "site-packages",
        "dist-packages",
        "test",
        "idlelib",
        "ensurepip",
        "tkinter",
        "turtledemo",
        "lib2to3",
        "pydoc_data",
        "turtle.py",
    }
)
EXCLUDED_STDLIB_PREFIXES = ("config-", "_tkinter", "_test", "_ctypes_test", "_xxtest", "xxlimited")
HOST_ONLY_MODULES = frozenset({"cli.py", "docker.py", "image.py"})  # need the docker SDK / typer

PASSWD = "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


class ImageBuildError(RuntimeError):
    """The sandbox image could not be built from this host's Python installation."""


@dataclass(frozen=True)
class PythonInstall:
    """The host interpreter that the image carries."""

    prefix: Path  # sys.base_prefix
    executable: Path  # the real interpreter binary inside prefix
    stdlib: Path  # <prefix>/lib/pythonX.Y
    version: str  # "3.11"

    @property
    def image_executable(self) -> str:
        """Path of the interpreter inside the image (same as on the host)."""
        return str(self.executable)


def host_python() -> PythonInstall:
    """Locate this host's base interpreter (outside any virtual environment)."""
    prefix = Path(sys.base_prefix)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [prefix / "bin" / f"python{version}", Path(os.path.realpath(sys.executable))]
    executable = next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)
    stdlib = prefix / "lib" / f"python{version}"
    if executable is None or not (stdlib / "os.py").is_file():
        raise ImageBuildError(
            f"cannot find a standard CPython layout under {prefix} (need bin/python{version} and "
            f"lib/python{version}/os.py)"
        )
    return PythonInstall(prefix=prefix, executable=executable, stdlib=stdlib, version=version)


def _is_excluded(name: str) -> bool:
    return name in EXCLUDED_STDLIB_NAMES or name.startswith(EXCLUDED_STDLIB_PREFIXES)


def _keep_pyc(name: str) -> bool:
    # Keep the plain bytecode cache (the read-only image cannot write one, and compiling the
    # stdlib on every import would slow every execution); drop the -O/-OO variants.
    return not name.endswith((".opt-1.pyc", ".opt-2.pyc"))


def stdlib_files(python: PythonInstall) -> Iterator[Path]:
    """Every file of the interpreter's standard library that goes into the image."""
    for root, dirs, files in os.walk(python.stdlib):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not (here == python.stdlib and _is_excluded(d)))
        for name in sorted(files):
            if here in (python.stdlib, python.stdlib / "lib-dynload") and _is_excluded(name):
                continue
            if name.endswith(".pyc") and not _keep_pyc(name):
                continue
            yield here / name


def interpreter_files(python: PythonInstall) -> list[Path]:
    """The interpreter binary and the prefix's libpython (if it is a shared build)."""
    files = [python.executable]
    libdir = python.prefix / "lib"
    files += sorted(p for p in libdir.glob(f"libpython{python.version}*.so*") if p.is_file())
    return files


_LDD_LINE = re.compile(r"^\s*(?:(\S+)\s+=>\s+)?(\S+)\s+\(0x[0-9a-f]+\)\s*$")


def shared_libraries(binaries: list[Path]) -> list[Path]:
    """System libraries (and the dynamic loader) that ``binaries`` load, resolved with ``ldd``."""
    libraries: set[Path] = set()
    chunk = 200
    for start in range(0, len(binaries), chunk):
        try:
            result = subprocess.run(
                ["ldd", *map(str, binaries[start : start + chunk])],
                capture_output=True,
                text=True,
                check=False,
            )
        except FileNotFoundError as exc:
            raise ImageBuildError("`ldd` is needed to build the sandbox image (glibc hosts only)") from exc
        for line in result.stdout.splitlines():
            match = _LDD_LINE.match(line)
            if match and match.group(2).startswith("/"):
                libraries.add(Path(match.group(2)))
    return sorted(libraries)


def sandbox_sources() -> dict[str, bytes]:
    """The package files the server needs, keyed by their path relative to the package root."""
    package_dir = Path(__file__).resolve().parent
    sources = {"laimark_pl/__init__.py": b'"""laimark_pl (sandbox server subset)."""\n'}
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir)
        if relative.name in HOST_ONLY_MODULES and len(relative.parts) == 1:
            continue
        sources[f"laimark_pl/sandbox/{relative.as_posix()}"] = path.read_bytes()
    return sources


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("laimark_pl")
    except Exception:  # not installed (running from a checkout)
        return "0"


def image_tag(python: PythonInstall | None = None) -> str:
    """``laimark-sandbox:<version>-<fingerprint>``: changes whenever the image's inputs change."""
    python = python or host_python()
    digest = hashlib.sha256()
    digest.update(f"{BUILDER_VERSION}\0{sys.version}\0{python.executable}\0".encode())
    digest.update(Path(__file__).read_bytes())  # this builder's own layout decisions
    for path in [*interpreter_files(python), *stdlib_files(python)]:
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    for name, content in sandbox_sources().items():
        digest.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
    return f"{IMAGE_REPOSITORY}:{_package_version()}-{digest.hexdigest()[:12]}"


class _RootfsWriter:
    """Writes a root filesystem tar: root-owned, world-readable, parents created as needed."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.entries: set[str] = set()

    def directory(self, path: str, mode: int = 0o755) -> None:
        path = path.strip("/")
        if not path or path in self.entries:
            return
        self.directory(os.path.dirname(path))
        info = tarfile.TarInfo(path)
        info.type, info.mode = tarfile.DIRTYPE, mode
        self.tar.addfile(info)
        self.entries.add(path)

    def data(self, path: str, content: bytes, mode: int = 0o644, mtime: float = 0) -> None:
        path = path.strip("/")
        self.directory(os.path.dirname(path))
        info = tarfile.TarInfo(path)
        info.size, info.mode, info.mtime = len(content), mode, int(mtime)
        self.tar.addfile(info, io.BytesIO(content))
        self.entries.add(path)

    def host_file(self, host_path: Path, mode: int | None = None) -> None:
        """Copy a host file to the same path, recreating any symlinks along the way.

        ``mode`` overrides the file's permissions (default: the host's, made world-readable)."""
        path = str(host_path)
        parts = Path(path).parts
        current = "/"
        for index, part in enumerate(parts[1:], start=1):
            current = os.path.join(current, part)
            if os.path.islink(current):
                target = os.readlink(current)
                self._symlink(current, target)
                resolved = os.path.normpath(os.path.join(os.path.dirname(current), target))
                rest = parts[index + 1 :]
                self.host_file(Path(resolved, *rest), mode)
                return
        if current.strip("/") in self.entries:
            return
        stat = os.stat(current)
        if mode is None:
            mode = (stat.st_mode & 0o777) | 0o444 | (0o111 if stat.st_mode & 0o111 else 0)
        self.directory(os.path.dirname(current))
        info = self.tar.gettarinfo(current, arcname=current.strip("/"))
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mode = mode
        with open(current, "rb") as handle:
            self.tar.addfile(info, handle)
        self.entries.add(current.strip("/"))

    def _symlink(self, path: str, target: str) -> None:
        path = path.strip("/")
        if path in self.entries:
            return
        self.directory(os.path.dirname(path))
        info = tarfile.TarInfo(path)
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
        self.tar.addfile(info)
        self.entries.add(path)


def write_rootfs(destination: Path, python: PythonInstall | None = None, progress: bool = True) -> int:
    """Write the image's root filesystem as a tar at ``destination``; returns the number of files."""
    python = python or host_python()
    stdlib = list(stdlib_files(python))
    binaries = interpreter_files(python) + [p for p in stdlib if p.suffix == ".so"]
    libraries = shared_libraries(binaries)
    files = [*interpreter_files(python), *libraries, *stdlib]
    with tarfile.open(destination, "w", format=tarfile.PAX_FORMAT) as tar:
        rootfs = _RootfsWriter(tar)
        for directory, mode in [("tmp", 0o1777), ("etc", 0o755), (SOCKET_MOUNT, 0o755)]:
            rootfs.directory(directory, mode)
        for directory in ("proc", "sys", "dev", "usr/bin"):
            rootfs.directory(directory)
        rootfs.data("etc/passwd", PASSWD.encode())
        rootfs.data("etc/group", GROUP.encode())
        # Execute-only interpreter: every process exec'd from it starts non-dumpable, so code
        # running under the same uid cannot ptrace the server or the pool's workers.
        rootfs.host_file(python.executable, mode=0o711)
        for path in tqdm(files, desc="sandbox image: files", unit="file", disable=not progress):
            rootfs.host_file(path)
        package_root = PACKAGE_ROOT.strip("/")
        for name, content in sandbox_sources().items():
            rootfs.data(f"{package_root}/{name}", content)
            if name.endswith(".py"):
                compiled = _compile(content, f"/{package_root}/{name}")
                cache = f"{package_root}/{os.path.dirname(name)}/__pycache__"
                stem = os.path.basename(name)[:-3]
                rootfs.data(f"{cache}/{stem}.{sys.implementation.cache_tag}.pyc", compiled)
    return len(files)


def _compile(source: bytes, filename: str) -> bytes:
    """Unchecked-hash bytecode for ``source`` (valid whatever the file's mtime)."""
    import importlib.util
    import marshal

    code = compile(source, filename, "exec", dont_inherit=True)
    flags = 0b01  # hash-based, unchecked
    header = importlib.util.MAGIC_NUMBER + flags.to_bytes(4, "little") + importlib.util.source_hash(source)
    return header + marshal.dumps(code)


def image_exists(client, tag: str) -> bool:
    """Whether the engine already has ``tag``."""
    import docker.errors

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def prune_images(client, keep: str, python: PythonInstall | None = None) -> list[str]:
    """Remove this repository's other tags (older builds for the same interpreter) that no
    container uses, and its untagged leftovers; returns what was removed."""
    import docker.errors

    python = python or host_python()
    removed = []
    for image in client.images.list(name=IMAGE_REPOSITORY):
        if (image.labels or {}).get(PYTHON_LABEL) != python.image_executable:
            continue  # another interpreter's image (e.g. a second Python on this machine)
        for tag in image.tags:
            if tag == keep or not tag.startswith(f"{IMAGE_REPOSITORY}:"):
                continue
            try:
                client.images.remove(tag, noprune=False)
                removed.append(tag)
            except docker.errors.APIError:  # in use by a (stopped) container, or removed concurrently
                pass
    for image in client.images.list(filters={"dangling": True, "label": VERSION_LABEL}):
        try:  # left untagged by a forced or concurrent rebuild
            client.images.remove(image.id)
            removed.append(image.id)
        except docker.errors.APIError:
            pass
    return removed


def build_image(client=None, *, force: bool = False, progress: bool = True, prune: bool = True) -> str:
    """Build (unless present and not ``force``) and return the sandbox image's tag.

    ``prune``: after a build, remove older ``laimark-sandbox`` tags that no container uses."""
    from laimark_pl.sandbox.docker import docker_client

    client = client or docker_client()
    python = host_python()
    tag = image_tag(python)
    previous = client.images.get(tag).id if image_exists(client, tag) else None
    if previous and not force:
        return tag
    repository, _, version = tag.partition(":")
    changes = [
        f"ENV PATH={python.executable.parent}:/usr/bin:/bin",
        "USER 65534:65534",
        "WORKDIR /tmp",
        f"CMD {json.dumps([python.image_executable, '-I', '-c', SERVER_BOOTSTRAP, '--help'])}",
        f"LABEL {VERSION_LABEL}={version}",
        f"LABEL {PYTHON_LABEL}={python.image_executable}",
    ]
    with tempfile.TemporaryDirectory(prefix="laimark-image-") as scratch:
        archive = Path(scratch) / "rootfs.tar"
        write_rootfs(archive, python, progress=progress)
        if progress:
            print(f"sandbox image: importing {archive.stat().st_size / 2**20:.0f} MiB as {tag}", file=sys.stderr)
        client.api.import_image_from_file(str(archive), repository=repository, tag=version, changes=changes)
    if not image_exists(client, tag):
        raise ImageBuildError(f"the engine did not keep the imported image {tag}")
    if prune:
        prune_images(client, keep=tag, python=python)
        if previous and previous != client.images.get(tag).id:
            _remove_quietly(client, previous)  # the forced rebuild's predecessor, now untagged
    return tag


def _remove_quietly(client, image_id: str) -> None:
    import docker.errors

    try:
        client.images.remove(image_id)
    except docker.errors.APIError:  # still used by a container
        pass
