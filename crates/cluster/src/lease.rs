//! Shard leases: one key per shard in the lease bucket, whose `max_age` is the lease.

use std::collections::{BTreeMap, BTreeSet};

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

    /// Who holds `shard` now, if anyone: the key's value (any cluster member can write it, so
    /// it is cut to 256 characters and cleaned of control characters before anyone shows it).
    pub async fn holder(&self, shard: u32) -> Result<Option<String>, Error> {
        Ok(self.lease_of(shard).await?.0)
    }

    /// [`Cluster::holder`], and the key's last revision (a claim, renewal or release; `None`
    /// when the key expired or never existed), which tells a reader that a shard free at two
    /// looks was held in between.
    pub(crate) async fn lease_of(
        &self,
        shard: u32,
    ) -> Result<(Option<String>, Option<u64>), Error> {
        use async_nats::jetstream::kv::Operation;
        let entry = self
            .leases
            .entry(key(shard))
            .await
            .map_err(|e| Error::request(format!("reading the lease of shard {shard}"), e))?;
        let revision = entry.as_ref().map(|e| e.revision);
        let holder = entry.filter(|e| e.operation == Operation::Put).map(|e| {
            let value = e.value.get(..1024).unwrap_or(&e.value);
            imstatus_core::text::clip(&String::from_utf8_lossy(value), 256)
        });
        Ok((holder, revision))
    }
}

/// The most shards a member key may name that are read (the config allows 4096).
const MEMBER_SHARDS: usize = 4096;
/// The most member keys read per listing (each is one more request per tick; any cluster
/// member can write keys into the bucket).
const MAX_MEMBERS: usize = 1024;

/// A watcher's member key: `member-` and its id with every character a key cannot hold
/// replaced by `_`.
fn member_key(writer: &str) -> String {
    let id: String = writer
        .chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '=') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("member-{id}")
}

impl Cluster {
    /// Says that the watcher `writer` is alive and can run `shards`: its member key, which the
    /// bucket's `max_age` expires one lease after the last announcement.
    pub async fn announce(&self, writer: &str, shards: &[u32]) -> Result<(), Error> {
        let list: Vec<String> = shards.iter().map(u32::to_string).collect();
        self.leases
            .put(member_key(writer), list.join(",").into_bytes().into())
            .await
            .map(|_| ())
            .map_err(|e| Error::request("announcing this watcher", e))
    }

    /// Removes the watcher's member key (a clean stop), so the others count it out at once.
    pub async fn withdraw(&self, writer: &str) -> Result<(), Error> {
        self.leases
            .delete(member_key(writer))
            .await
            .map_err(|e| Error::request("withdrawing this watcher", e))
    }

    /// Who is in the bucket now: the live watchers with the shards each says it can run
    /// (keyed by member key), and the shards someone holds. Member values are read
    /// defensively (any cluster member can write them): at most 1,024 members, 4,096 numbers
    /// below `shards` each, anything else skipped.
    pub async fn roster(&self) -> Result<Roster, Error> {
        use futures_util::TryStreamExt;
        let keys: Vec<String> = self
            .leases
            .keys()
            .await
            .map_err(|e| Error::request("listing the leases", e))?
            .try_collect()
            .await
            .map_err(|e| Error::request("listing the leases", e))?;
        let mut roster = Roster::default();
        for key in keys {
            if let Some(shard) = key.strip_prefix("shard-").and_then(|s| s.parse().ok()) {
                roster.held.insert(shard);
                continue;
            }
            if !key.starts_with("member-") || roster.members.len() >= MAX_MEMBERS {
                continue;
            }
            let value = self
                .leases
                .get(&key)
                .await
                .map_err(|e| Error::request("reading a watcher's shards", e))?;
            let Some(value) = value else { continue };
            let shards = String::from_utf8_lossy(&value)
                .split(',')
                .take(MEMBER_SHARDS)
                .filter_map(|s| s.parse::<u32>().ok())
                .filter(|&s| s < self.config().shards)
                .collect();
            roster.members.insert(key, shards);
        }
        Ok(roster)
    }
}

/// The lease bucket's view of the watchers, from [`Cluster::roster`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roster {
    /// Each live watcher's member key and the shards it can run.
    pub members: BTreeMap<String, BTreeSet<u32>>,
    /// The shards whose lease someone holds.
    pub held: BTreeSet<u32>,
}

/// How many of `mine` (the shards this watcher can run) it should hold, given every live
/// watcher's shards (this one's included): its expected share, each shard counted as 1 / the
/// number of live watchers that can run it, rounded up. With equal account lists that is
/// ⌈shards / watchers⌉, so the watchers' shares always cover every shard.
pub(crate) fn fair_share(mine: &[u32], members: &BTreeMap<String, BTreeSet<u32>>) -> usize {
    let share: f64 = mine
        .iter()
        .map(|s| {
            let able = members.values().filter(|m| m.contains(s)).count().max(1);
            1.0 / able as f64
        })
        .sum();
    // A sum that is a whole number in exact arithmetic (3 × 1/3) may come out a hair above it.
    (share - 1e-9).ceil().max(0.0) as usize
}

/// The member key of `writer` (to find itself in [`Cluster::members`]).
pub(crate) fn member_of(writer: &str) -> String {
    member_key(writer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(lists: &[&[u32]]) -> BTreeMap<String, BTreeSet<u32>> {
        lists
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("member-{i}"), l.iter().copied().collect()))
            .collect()
    }

    #[test]
    fn equal_lists_share_evenly_and_cover_every_shard() {
        let all: Vec<u32> = (0..64).collect();
        for n in 1..=5 {
            let lists: Vec<&[u32]> = vec![&all; n];
            let share = fair_share(&all, &members(&lists));
            assert_eq!(share, 64usize.div_ceil(n), "{n} watchers");
            assert!(share * n >= 64);
        }
    }

    #[test]
    fn different_lists_give_each_what_only_it_can_run() {
        // A can run shards 1 and 2, B runs 1 to 4: A's share is 1, B's 3 — 4 in all.
        let m = members(&[&[1, 2], &[1, 2, 3, 4]]);
        assert_eq!(fair_share(&[1, 2], &m), 1);
        assert_eq!(fair_share(&[1, 2, 3, 4], &m), 3);
        // Not yet announced (alone): everything.
        assert_eq!(fair_share(&[5, 6], &m), 2);
    }

    #[test]
    fn member_keys_hold_only_what_a_key_may() {
        assert_eq!(member_key("h.example-12-34"), "member-h_example-12-34");
        assert_eq!(member_key("a b/c>*"), "member-a_b_c__");
        assert_eq!(member_key(&"x".repeat(500)).len(), 7 + 128);
    }
}
