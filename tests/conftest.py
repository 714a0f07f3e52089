"""Suite-wide test setup: tests under tests/integration are marked `integration` automatically, and
`require_mariadb()` skips (locally) or fails (in CI) when the MariaDB server binaries are missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ddm.tools import sandbox

INTEGRATION_DIR = Path(__file__).parent / "integration"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_mariadb() -> None:
    """Skip the calling test or fixture when mariadbd is not installed - except in CI, where a missing MariaDB
    means a broken runner and must not turn the integration suite into silent skips."""
    if sandbox.mariadb_available():
        return
    reason = f"MariaDB server not installed (needs mariadbd, mariadb-install-db): {sandbox.APT_INSTALL}"
    if in_ci():
        pytest.fail(reason + " [CI=true: failing instead of skipping]", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def mariadb() -> dict[str, str]:
    """Paths of the MariaDB binaries (mariadbd, install_db, client, admin); skips/fails as require_mariadb()."""
    require_mariadb()
    return sandbox.ensure_mariadb(install=False)
