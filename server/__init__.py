"""The replica server of the assignment: ``GET /home`` and ``GET /heartbeat``."""
