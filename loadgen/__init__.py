"""HTTP-only load driver for the assignment's analysis tasks (A-1 spread so far)."""
