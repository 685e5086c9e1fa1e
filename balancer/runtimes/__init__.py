"""Replica runtimes: the seam, and every engine that starts, stops and lists replicas."""
