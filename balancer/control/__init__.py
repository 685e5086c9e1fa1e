"""The control plane: membership changes, health checks and the leader's reconciliation."""
