"""Shared test fixtures: root detection for network-namespace tests."""

from __future__ import annotations

import os
import shutil

import pytest


def have_root_net() -> bool:
    """True when we may create namespaces, routes and veths (root + iproute2)."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


requires_root = pytest.mark.skipif(
    not have_root_net(), reason="needs root and iproute2 (ip netns, routes)"
)
