"""Upstream: the only package that talks HTTP to model replicas.

A pooled keep-alive HTTP/1.1 client on asyncio protocols and httptools. Socket and
parser errors are translated into the router's own errors here, once.
"""
