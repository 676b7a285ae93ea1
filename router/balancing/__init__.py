"""Balancing: pure decisions without I/O (which deployment, which replica).

The routing table maps endpoint names to routes; a route splits traffic between
deployments and each deployment picks among its replicas. Nothing here reads a
socket, so every decision is unit-tested on its own.
"""
