"""The executor pins glibc's mmap threshold at start, unless the environment sets it."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from executor.memory import ENV

PROBE = "from executor.memory import pin_mmap_threshold; print(pin_mmap_threshold())"


def pinned(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != ENV}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_threshold_is_pinned_on_glibc() -> None:
    assert pinned() == "True"


def test_a_threshold_set_in_the_environment_is_left_alone() -> None:
    assert pinned(**{ENV: "65536"}) == "False"
