//! imstatus on a NATS JetStream cluster (docs/cluster.md).
