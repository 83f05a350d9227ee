//! The caps on open connections: [`Limits`] (with the timeouts), and the [`Table`] of open
//! connections, from which the accept loop (`crate::accept`) takes a [`Slot`] per connection.
//!
//! Every accepted socket first takes a slot: one of `max_connections` (a semaphore) and one of
//! `max_connections_per_ip` for its address (a counter map; an IPv6 peer counts by its /64,
//! which one host usually owns whole). The slot lives inside the socket's I/O object
//! ([`Tracked`](crate::accept::Tracked)), so it is given back when the socket closes, whether
//! hyper or an upgraded WebSocket held it last: streams count against the caps like any other
//! connection. The counter map holds one entry per address with open connections, so it never
//! has more than `max_connections` entries.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use imstatus_config::ServeConfig;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// Caps on connections and their timeouts (`[serve] max_connections`, `max_connections_per_ip`,
/// `header_read_timeout`, `idle_timeout`; see docs/gateway.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, all clients together; more are refused with 503.
    pub max_connections: usize,
    /// Connections open at once from one address (IPv6: one /64); more are refused with 503.
    pub max_connections_per_ip: usize,
    /// How long a client has to send a whole request head, counted from when the connection
    /// opens or the previous response ends.
    pub header_read_timeout: Duration,
    /// How long a connection may go without a byte moving either way.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_config(&ServeConfig::default())
    }
}

impl Limits {
    /// The limits of a `[serve]` section.
    pub fn from_config(config: &ServeConfig) -> Limits {
        Limits {
            max_connections: config.max_connections,
            max_connections_per_ip: config.max_connections_per_ip,
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
        }
    }

    /// The same limits, made usable: at least one connection, at most the semaphore's maximum,
    /// no zero timeouts.
    fn sane(self) -> Limits {
        let max = self.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Limits {
            max_connections: max,
            max_connections_per_ip: self.max_connections_per_ip.clamp(1, max),
            header_read_timeout: self.header_read_timeout.max(Duration::from_millis(1)),
            idle_timeout: self.idle_timeout.max(Duration::from_millis(1)),
        }
    }
}

/// What one peer counts as for `max_connections_per_ip`: an IPv4 address, or an IPv6 /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Peer {
    V4(Ipv4Addr),
    V6Net([u8; 8]),
}

impl Peer {
    pub(crate) fn of(ip: IpAddr) -> Peer {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Peer::V4(v4),
            IpAddr::V6(v6) => {
                let mut net = [0u8; 8];
                net.copy_from_slice(&v6.octets()[..8]);
                Peer::V6Net(net)
            }
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::V4(v4) => write!(f, "{v4}"),
            Peer::V6Net(net) => {
                let mut octets = [0u8; 16];
                octets[..8].copy_from_slice(net);
                write!(f, "{}/64", std::net::Ipv6Addr::from(octets))
            }
        }
    }
}

/// The open connections: slots under the two caps, and their count.
pub(crate) struct Table {
    limits: Limits,
    slots: Arc<Semaphore>,
    /// Open connections per peer; an entry exists only while its count is above zero.
    per_peer: Mutex<HashMap<Peer, usize>>,
    open: watch::Sender<usize>,
}

/// Why a connection got no slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections` are open.
    Full,
    /// `max_connections_per_ip` are open from this peer.
    PerPeer(Peer),
}

impl Table {
    pub(crate) fn new(limits: Limits) -> Table {
        let limits = limits.sane();
        Table {
            limits,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            per_peer: Mutex::new(HashMap::new()),
            open: watch::channel(0).0,
        }
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    pub(crate) fn open(&self) -> usize {
        *self.open.borrow()
    }

    /// Resolves once no connection is open.
    pub(crate) async fn all_closed(&self) {
        let mut rx = self.open.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// A slot for a connection from `peer`, under both caps, given back when it is dropped.
    pub(crate) fn slot(self: &Arc<Self>, peer: Peer) -> Result<Slot, Refusal> {
        let (permit, peer) = self.take(peer)?;
        Ok(Slot {
            table: self.clone(),
            peer,
            _permit: permit,
        })
    }

    /// A place for a connection from `peer`, under both caps; [`Table::give_back`] returns it.
    fn take(&self, peer: Peer) -> Result<(OwnedSemaphorePermit, Peer), Refusal> {
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Full)?;
        let mut map = self.per_peer.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(peer).or_insert(0);
        if *n >= self.limits.max_connections_per_ip {
            return Err(Refusal::PerPeer(peer));
        }
        *n += 1;
        drop(map);
        self.open.send_modify(|n| *n += 1);
        Ok((permit, peer))
    }

    fn give_back(&self, peer: Peer) {
        let mut map = self.per_peer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&peer);
            }
        }
        drop(map);
        self.open.send_modify(|n| *n = n.saturating_sub(1));
    }

    #[cfg(test)]
    fn peers(&self) -> usize {
        self.per_peer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// One connection's place under the caps, given back when dropped.
pub(crate) struct Slot {
    table: Arc<Table>,
    peer: Peer,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table.give_back(self.peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_addresses_and_ipv6_networks() {
        let p = |s: &str| Peer::of(s.parse().expect("ip"));
        assert_eq!(p("10.0.0.1"), p("::ffff:10.0.0.1"), "v4-mapped is v4");
        assert_ne!(p("10.0.0.1"), p("10.0.0.2"));
        assert_eq!(p("2001:db8:1:2::1"), p("2001:db8:1:2:ffff::9"), "one /64");
        assert_ne!(p("2001:db8:1:2::1"), p("2001:db8:1:3::1"));
        assert_eq!(p("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(p("127.0.0.1").to_string(), "127.0.0.1");
    }

    #[test]
    fn limits_are_made_usable() {
        let l = Limits {
            max_connections: 0,
            max_connections_per_ip: 99,
            header_read_timeout: Duration::ZERO,
            idle_timeout: Duration::ZERO,
        }
        .sane();
        assert_eq!((l.max_connections, l.max_connections_per_ip), (1, 1));
        assert!(!l.header_read_timeout.is_zero() && !l.idle_timeout.is_zero());
    }

    #[test]
    fn the_table_caps_both_ways_and_keeps_no_empty_entries() {
        let table = Table::new(Limits {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..Limits::default()
        });
        let a = Peer::of("10.0.0.1".parse().expect("ip"));
        let b = Peer::of("10.0.0.2".parse().expect("ip"));
        let a1 = table.take(a).expect("a 1");
        let a2 = table.take(a).expect("a 2");
        assert_eq!(table.take(a).err(), Some(Refusal::PerPeer(a)));
        let b1 = table.take(b).expect("b 1");
        assert_eq!(table.take(b).err(), Some(Refusal::Full));
        assert_eq!(table.open(), 3);
        drop(a1);
        table.give_back(a);
        drop(a2);
        table.give_back(a);
        assert_eq!(table.peers(), 1, "a's entry is gone");
        drop(b1);
        table.give_back(b);
        assert_eq!((table.open(), table.peers()), (0, 0));
    }
}
