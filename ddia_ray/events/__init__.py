"""Event sourcing and the event bus: a replicated append-only event store, subscriptions,
aggregates, projections, and publish/subscribe by event type.

Theory of operation: the event store's decisions (expected versions, idempotent ids, commit
positions) are deterministic procedures that the replicated store runs inside its log
(:mod:`ddia_ray.replication.procedures`), so a Raft group orders and replicates them like any
write; everything else (reads, subscriptions, aggregates, projections) is built on top.
"""
