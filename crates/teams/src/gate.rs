//! Which received D-Bus signals reach the source at all (sans-IO, like the libpurple source's
//! gate).
//!
//! Any peer on the bus can send a signal straight to imstatus's unique name, past every match
//! rule, naming any interface, member and path; the bus daemon always writes the true sender
//! into the header. So the gate admits only `NameOwnerChanged` of the app's name sent by the
//! bus daemon itself (`org.freedesktop.DBus`, a name no peer can own), and the app's interface
//! on the app's path sent by the current owner of the app's name. It learns the owner from
//! those `NameOwnerChanged`s as they are received and from the source's `GetNameOwner`
//! answers; with receive positions, whichever was received last wins. Until the first answer
//! it admits the app's interface from anyone: the source checks the sender again once it knows
//! the owner.

use crate::names::{BUS_DAEMON, DBUS_INTERFACE, DBUS_NAME, DBUS_PATH};

/// The pump's filter; see the module docs.
#[derive(Clone, Debug)]
pub(crate) struct Gate<P> {
    /// The owner (`None`: the app does not run) and where that was learnt.
    owner: Option<(Option<String>, P)>,
}

/// The header fields the gate reads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header<'a> {
    pub sender: Option<&'a str>,
    pub path: Option<&'a str>,
    pub interface: Option<&'a str>,
    pub member: Option<&'a str>,
}

impl<P: Ord + Copy> Gate<P> {
    /// A gate that does not know the owner yet.
    pub fn new() -> Self {
        Gate { owner: None }
    }

    /// Learns that `owner` owned the app's name as of `at` (ignored if something received
    /// later is known already).
    pub fn learn(&mut self, owner: Option<&str>, at: P) {
        if self.owner.as_ref().is_some_and(|(_, known)| at < *known) {
            return;
        }
        self.owner = Some((owner.map(str::to_owned), at));
    }

    /// Decides on a signal received at `at`. `owner_change` reads a `NameOwnerChanged` body as
    /// (name, new owner); it is called only for the bus daemon's own signals. A body that
    /// cannot be read is refused (the bus daemon never sends one).
    pub fn admit(
        &mut self,
        at: P,
        h: Header<'_>,
        owner_change: impl FnOnce() -> Option<(String, String)>,
    ) -> bool {
        if h.sender == Some(BUS_DAEMON) {
            if h.interface != Some(BUS_DAEMON) || h.member != Some("NameOwnerChanged") {
                return false;
            }
            return match owner_change() {
                Some((name, new)) if name == DBUS_NAME => {
                    self.learn((!new.is_empty()).then_some(new.as_str()), at);
                    true
                }
                _ => false,
            };
        }
        if h.interface != Some(DBUS_INTERFACE) || h.path != Some(DBUS_PATH) {
            return false;
        }
        match &self.owner {
            None => true,
            Some((owner, _)) => owner.is_some() && h.sender == owner.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = ":1.7";
    const PEER: &str = ":1.66";

    fn app_signal(gate: &mut Gate<u64>, at: u64, sender: &str) -> bool {
        gate.admit(
            at,
            Header {
                sender: Some(sender),
                path: Some(DBUS_PATH),
                interface: Some(DBUS_INTERFACE),
                member: Some("InCallChanged"),
            },
            || None,
        )
    }

    fn owner_change(gate: &mut Gate<u64>, at: u64, sender: &str, name: &str, new: &str) -> bool {
        let body = (name.to_owned(), new.to_owned());
        gate.admit(
            at,
            Header {
                sender: Some(sender),
                path: Some("/org/freedesktop/DBus"),
                interface: Some(BUS_DAEMON),
                member: Some("NameOwnerChanged"),
            },
            || Some(body),
        )
    }

    #[test]
    fn only_the_owner_speaks_for_the_app_and_only_the_bus_changes_the_owner() {
        let mut gate = Gate::new();
        // Before the first answer: anyone on the app's interface and path (checked later).
        assert!(app_signal(&mut gate, 1, PEER));
        gate.learn(Some(APP), 10);
        assert!(app_signal(&mut gate, 11, APP));
        assert!(!app_signal(&mut gate, 12, PEER));
        // A peer's NameOwnerChanged is not the bus's, whatever it says.
        assert!(!owner_change(&mut gate, 13, PEER, DBUS_NAME, ""));
        assert!(!owner_change(&mut gate, 14, PEER, DBUS_NAME, PEER));
        assert!(app_signal(&mut gate, 15, APP));
        // Another name's owner change is not ours.
        assert!(!owner_change(
            &mut gate,
            16,
            BUS_DAEMON,
            "org.example",
            PEER
        ));
        // The bus's own does.
        assert!(owner_change(&mut gate, 17, BUS_DAEMON, DBUS_NAME, ""));
        assert!(!app_signal(&mut gate, 18, APP));
        assert!(owner_change(&mut gate, 19, BUS_DAEMON, DBUS_NAME, ":1.9"));
        assert!(app_signal(&mut gate, 20, ":1.9"));
        // The owner on another path or interface, or the bus's other signals: no.
        assert!(!gate.admit(
            21,
            Header {
                sender: Some(":1.9"),
                path: Some("/other"),
                interface: Some(DBUS_INTERFACE),
                member: Some("InCallChanged"),
            },
            || None
        ));
        assert!(!gate.admit(
            22,
            Header {
                sender: Some(BUS_DAEMON),
                path: Some("/org/freedesktop/DBus"),
                interface: Some(BUS_DAEMON),
                member: Some("NameAcquired"),
            },
            || None
        ));
    }

    #[test]
    fn what_was_received_last_wins() {
        let mut gate = Gate::new();
        assert!(owner_change(&mut gate, 20, BUS_DAEMON, DBUS_NAME, ""));
        // An answer read before that arrives later: not believed.
        gate.learn(Some(APP), 15);
        assert!(!app_signal(&mut gate, 21, APP));
        gate.learn(Some(":1.9"), 25);
        assert!(app_signal(&mut gate, 26, ":1.9"));
    }
}
