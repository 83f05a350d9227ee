//! Which received signals reach the source at all: the filter the signal pump applies before
//! anything is queued.
//!
//! Any process on the session bus can send a signal straight to imstatus's unique name (bus
//! match rules do not apply to a unicast signal) and claim any interface and member. The bus
//! daemon, though, always writes the true sender into the header. So the gate admits only
//!
//! - `NameOwnerChanged` of `im.pidgin.purple.PurpleService` whose sender is the bus daemon
//!   itself (`org.freedesktop.DBus`, a name no peer can own), and
//! - libpurple's interface whose sender is the current owner of that name.
//!
//! The gate learns the owner from those `NameOwnerChanged`s as they are received, and from the
//! source's queries (`learn`); with receive positions, whichever was received last wins, as in
//! the translator. Until the first answer it does not know the owner and admits libpurple's
//! interface from anyone: the translator, which checks the sender again once it knows the
//! owner, drops what does not belong. Sans-IO, like the translator: positions are zbus's
//! receive sequence in the driver and plain numbers in tests.

use crate::signal::{DBUS_NAME, PURPLE_INTERFACE, PURPLE_SERVICE};

/// The pump's filter; see the module docs.
#[derive(Clone, Debug)]
pub(crate) struct Gate<P> {
    /// libpurple's owner (`None`: no client runs) and where that was learnt; `None` until the
    /// first answer.
    owner: Option<(Option<String>, P)>,
}

impl<P: Ord + Copy> Gate<P> {
    /// A gate that does not know the owner yet.
    pub fn new() -> Self {
        Gate { owner: None }
    }

    /// Learns that `owner` owned libpurple's name as of `at` (ignored if something received
    /// later is known already).
    pub fn learn(&mut self, owner: Option<&str>, at: P) {
        if self.owner.as_ref().is_some_and(|(_, known)| at < *known) {
            return;
        }
        self.owner = Some((owner.map(str::to_owned), at));
    }

    /// Decides on a signal received at `at`. `owner_change` reads a `NameOwnerChanged` body as
    /// (name, new owner); it is called only for the bus daemon's own signals. A body that
    /// cannot be read is admitted so that the source reports it as an anomaly.
    pub fn admit(
        &mut self,
        at: P,
        sender: Option<&str>,
        interface: Option<&str>,
        member: Option<&str>,
        owner_change: impl FnOnce() -> Option<(String, String)>,
    ) -> bool {
        if sender == Some(DBUS_NAME) {
            if interface != Some(DBUS_NAME) || member != Some("NameOwnerChanged") {
                return false;
            }
            return match owner_change() {
                Some((name, new)) if name == PURPLE_SERVICE => {
                    self.learn((!new.is_empty()).then_some(new.as_str()), at);
                    true
                }
                Some(_) => false,
                None => true,
            };
        }
        if interface != Some(PURPLE_INTERFACE) {
            return false;
        }
        match &self.owner {
            None => true,
            Some((owner, _)) => owner.is_some() && sender == owner.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FINCH: &str = ":1.7";
    const PEER: &str = ":1.66";

    fn purple(gate: &mut Gate<u64>, at: u64, sender: &str) -> bool {
        gate.admit(
            at,
            Some(sender),
            Some(PURPLE_INTERFACE),
            Some("AccountSignedOff"),
            || None,
        )
    }

    fn owner_change(gate: &mut Gate<u64>, at: u64, sender: &str, new: &str) -> bool {
        let body = (PURPLE_SERVICE.to_owned(), new.to_owned());
        gate.admit(
            at,
            Some(sender),
            Some(DBUS_NAME),
            Some("NameOwnerChanged"),
            || Some(body),
        )
    }

    #[test]
    fn before_the_first_answer_libpurples_interface_passes_from_anyone() {
        let mut gate = Gate::new();
        assert!(purple(&mut gate, 1, FINCH));
        assert!(purple(&mut gate, 2, PEER));
        // Other interfaces and signals of the bus other than owner changes never pass.
        assert!(!gate.admit(3, Some(PEER), Some("org.example.X"), Some("Y"), || None));
        assert!(!gate.admit(
            4,
            Some(DBUS_NAME),
            Some(DBUS_NAME),
            Some("NameAcquired"),
            || { None }
        ));
    }

    #[test]
    fn only_the_owner_speaks_for_libpurple_and_only_the_bus_changes_the_owner() {
        let mut gate = Gate::new();
        gate.learn(Some(FINCH), 10);
        assert!(purple(&mut gate, 11, FINCH));
        assert!(!purple(&mut gate, 12, PEER));
        // A peer's NameOwnerChanged is not the bus's, whatever it says, and teaches nothing.
        assert!(!owner_change(&mut gate, 13, PEER, ""));
        assert!(!owner_change(&mut gate, 14, PEER, PEER));
        assert!(purple(&mut gate, 15, FINCH));
        assert!(!purple(&mut gate, 16, PEER));
        // The bus's does.
        assert!(owner_change(&mut gate, 17, DBUS_NAME, ""));
        assert!(!purple(&mut gate, 18, FINCH));
        assert!(owner_change(&mut gate, 19, DBUS_NAME, ":1.9"));
        assert!(purple(&mut gate, 20, ":1.9"));
        assert!(!purple(&mut gate, 21, FINCH));
        // Another name's owner change is not ours; an unreadable one goes on to the source.
        let other = ("org.example".to_owned(), PEER.to_owned());
        assert!(!gate.admit(
            22,
            Some(DBUS_NAME),
            Some(DBUS_NAME),
            Some("NameOwnerChanged"),
            || Some(other)
        ));
        assert!(gate.admit(
            23,
            Some(DBUS_NAME),
            Some(DBUS_NAME),
            Some("NameOwnerChanged"),
            || None
        ));
        assert!(purple(&mut gate, 24, ":1.9"));
    }

    #[test]
    fn what_was_received_last_wins() {
        let mut gate = Gate::new();
        // finch left at 20; a query that read it as the owner at 15 answers later.
        assert!(owner_change(&mut gate, 20, DBUS_NAME, ""));
        gate.learn(Some(FINCH), 15);
        assert!(!purple(&mut gate, 21, FINCH));
        // A query that read a new owner after that is believed.
        gate.learn(Some(":1.9"), 25);
        assert!(purple(&mut gate, 26, ":1.9"));
        gate.learn(None, 30);
        assert!(!purple(&mut gate, 31, ":1.9"));
    }
}
