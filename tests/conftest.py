"""Shared fixtures. Every random draw in the tests takes an explicit seed."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TWINLOOP_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "twinloop"))

import twinloop as tl


@pytest.fixture(scope="session")
def t1d() -> tl.models.Model:
    return tl.models.get("t1d-uva-padova")


@pytest.fixture(scope="session")
def pk() -> tl.models.Model:
    return tl.models.get("pk-one-compartment")
