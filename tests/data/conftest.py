"""Fixtures for the data tests: a private cache per test and a machine with no network."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("PP_CLUSTER_CACHE", str(path))
    return path


@pytest.fixture
def no_network(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise OSError("network access is forbidden in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
