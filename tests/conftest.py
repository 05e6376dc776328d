"""Suite-wide policy for hardware-dependent tests.

``@pytest.mark.gpu`` tests skip without CUDA (run them on a GPU machine). ``@pytest.mark.docker``
tests skip without a reachable Docker engine, except when ``LAIMARK_REQUIRE_DOCKER=1`` (CI), where
a missing engine fails them instead of hiding them.
"""

from __future__ import annotations

import functools
import os

import pytest


@functools.cache
def docker_engine_reachable() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
        return True
    except Exception:
        return False


@pytest.fixture
def _docker_required_but_missing():
    pytest.fail("LAIMARK_REQUIRE_DOCKER=1 but no Docker engine is reachable (run .ci/docker-setup.sh)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    cuda = torch.cuda.is_available()
    need_docker = any("docker" in item.keywords for item in items)
    docker_ok = docker_engine_reachable() if need_docker else True
    required = os.environ.get("LAIMARK_REQUIRE_DOCKER") == "1"
    for item in items:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "docker" in item.keywords and not docker_ok:
            if required:
                item.fixturenames.insert(0, "_docker_required_but_missing")
            else:
                item.add_marker(pytest.mark.skip(reason="no Docker engine reachable"))
