"""HTTP-only load driver and the assignment's analyses A-1..A-4 (``lb-loadgen --help``).

Must not import anything from ``balancer`` or ``server``: loadgen speaks only HTTP to a
balancer URL, so it works against the embedded default and the Docker deployment alike.
"""
