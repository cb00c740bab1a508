"""Load clients run as their own processes (pinned to the load core)."""
