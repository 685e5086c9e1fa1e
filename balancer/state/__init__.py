"""Shared state: what balancer instances share, and the ring view built from it.

The seams (membership, liveness, runtime records, instances, events, leadership, admin relay),
their in-memory and Redis backends, and ``RingView``, the immutable ring snapshot every request
is routed on.
"""
