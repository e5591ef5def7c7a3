"""Event sourcing and the event bus: a replicated append-only event store, subscriptions,
aggregates, projections, and publish/subscribe by event type.

Theory of operation: the event store's decisions (expected versions, idempotent ids, commit
positions) are deterministic procedures that the replicated store runs inside its log
(:mod:`ddia_ray.replication.procedures`), so a Raft group orders and replicates them like any
write; everything else (reads, subscriptions, aggregates, projections) is built on top.
"""

from .aggregate import Aggregate, applies
from .bus import EventBus, EventBusClient
from .client import EventStoreClient
from .persistent import ConsumerGroups, PersistentSubscription
from .projection import Projection, ProjectionRunner, ReadModel, StoreReadModel, View
from .records import ANY, NO_STREAM, STREAM_EXISTS, AppendResult, EventData, RecordedEvent, StreamMetadata
from .repository import Repository
from .store import EventStore
from .subscription import CatchUpSubscription
from .topics import Topics

__all__ = ["EventStore", "EventStoreClient", "EventData", "RecordedEvent", "AppendResult", "StreamMetadata", "ANY",
           "NO_STREAM", "STREAM_EXISTS", "CatchUpSubscription", "ConsumerGroups", "PersistentSubscription",
           "Aggregate", "applies", "Repository", "Projection", "ProjectionRunner", "ReadModel", "StoreReadModel",
           "View", "EventBus", "EventBusClient", "Topics"]
