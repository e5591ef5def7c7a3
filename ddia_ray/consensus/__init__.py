"""Consensus: Raft (:mod:`ddia_ray.consensus.raft`), the pure core every replicated component builds on."""

from .raft import RaftConfig, RaftNode

__all__ = ["RaftNode", "RaftConfig"]
