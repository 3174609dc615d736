"""Fake protocol peers (servers speaking the real framing on loopback) for the tests."""
