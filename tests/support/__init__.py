"""Test helpers (not installed with maild)."""
