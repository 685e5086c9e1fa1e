"""Consistent-hashing HTTP load balancer."""
