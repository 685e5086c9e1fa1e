"""Shared state: what balancer instances share, and the ring view built from it.

``store`` holds the seams, one small Protocol per concern (membership with compare-and-set and
watch, liveness, runtime records, instances, events) and the models they speak; ``codec`` their
JSON forms. The backends: ``memory`` (one process) and ``redis_store`` with
``redis_leadership`` and ``redis_relay`` (several instances); ``coordination`` holds the
leadership and relay seams. ``backends`` (memory) and ``redis_backend`` (Redis) are the
factories that return a backend's coordinated set. ``view`` holds ``RingView``, the immutable
ring snapshot every request is routed on.
"""
