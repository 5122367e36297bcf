"""Tests that drive a real browser (Debian chromium) against a real server."""
