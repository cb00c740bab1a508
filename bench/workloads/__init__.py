"""The workloads: each takes a :class:`~bench.settings.Settings` and returns plain data."""
