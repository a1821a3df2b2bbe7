import os

import pytest

from sml import sandbox


@pytest.fixture(scope="session")
def strong_sandbox():
    """Tests of isolation need bubblewrap; CI must have it (make setup installs it)."""
    if sandbox.isolation_mode() != "bwrap":
        if os.environ.get("CI"):
            pytest.fail("bubblewrap is not usable in CI: the sandbox would run in its weak mode")
        pytest.skip("bubblewrap unavailable: only the weak sandbox mode can run here")
