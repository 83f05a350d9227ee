//! Shard leases: one key per shard in the lease bucket, whose `max_age` is the lease.

use async_nats::jetstream::kv::{CreateErrorKind, UpdateErrorKind};

use crate::{Cluster, Error};

/// A shard lease this process holds: the key's revision it last wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The shard.
    pub shard: u32,
    /// The key's revision written by the last claim or renewal.
    pub revision: u64,
}

fn key(shard: u32) -> String {
    format!("shard-{shard}")
}

impl Cluster {
    /// Claims `shard` for `owner` if nobody holds it (the key is absent, deleted or expired):
    /// `Some(lease)`, or `None` when another process holds it.
    pub async fn claim(&self, shard: u32, owner: &str) -> Result<Option<Lease>, Error> {
        match self
            .leases
            .create(key(shard), owner.to_owned().into_bytes().into())
            .await
        {
            Ok(revision) => Ok(Some(Lease { shard, revision })),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(Error::request(format!("claiming shard {shard}"), e)),
        }
    }

    /// Renews `lease` by compare-and-swap on its revision: `Some(renewed)`, or `None` when the
    /// key changed since (it expired and another process claimed it).
    pub async fn renew(&self, lease: &Lease, owner: &str) -> Result<Option<Lease>, Error> {
        match self
            .leases
            .update(
                key(lease.shard),
                owner.to_owned().into_bytes().into(),
                lease.revision,
            )
            .await
        {
            Ok(revision) => Ok(Some(Lease {
                shard: lease.shard,
                revision,
            })),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(Error::request(
                format!("renewing the lease of shard {}", lease.shard),
                e,
            )),
        }
    }

    /// Releases `lease` (deletes the key if it is still at the lease's revision), so that
    /// another watcher can claim the shard at once.
    pub async fn release(&self, lease: &Lease) -> Result<(), Error> {
        self.leases
            .delete_expect_revision(key(lease.shard), Some(lease.revision))
            .await
            .map_err(|e| Error::request(format!("releasing the lease of shard {}", lease.shard), e))
    }

    /// Who holds `shard` now, if anyone: the key's value (any cluster member may write it, so
    /// it is cut to 256 characters and cleaned of control characters before anyone shows it).
    pub async fn holder(&self, shard: u32) -> Result<Option<String>, Error> {
        use async_nats::jetstream::kv::Operation;
        let entry = self
            .leases
            .entry(key(shard))
            .await
            .map_err(|e| Error::request(format!("reading the lease of shard {shard}"), e))?;
        Ok(entry.filter(|e| e.operation == Operation::Put).map(|e| {
            let value = e.value.get(..1024).unwrap_or(&e.value);
            imstatus_core::text::clip(&String::from_utf8_lossy(value), 256)
        }))
    }
}
