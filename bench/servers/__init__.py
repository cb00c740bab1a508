"""Servers under test. Each peer serves the same routes with the same bytes."""
