"""The project's apps: each subpackage listed under ``apps:`` in server.yml is loaded."""
