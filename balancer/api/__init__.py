"""The HTTP API served on the admin socket.

The contract's admin endpoints, routing questions, the live ring page, the OpenAPI description,
Prometheus metrics and target discovery.
"""
