"""Load driver for the assignment's analysis tasks (filled in by the observability issue)."""
