"""Shared pytest configuration. Fixtures for the real SeaweedFS server live in tests/seaweed.py."""

pytest_plugins = ["tests.seaweed"]
