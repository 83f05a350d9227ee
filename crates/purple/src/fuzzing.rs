//! Signal bodies of every shape, from every kind of sender, through the gate, the parser and
//! the translator. Whatever a peer or a broken client sends, the answer is an observation, an
//! anomaly or nothing: never a panic, and a peer that never owned libpurple's name gets past
//! neither the gate nor the translator. [`signals`] reads the signals out of raw bytes (the
//! way a fuzzer's input becomes a structured value) and panics when an invariant breaks; the
//! cargo-fuzz target `purple_signal` (`fuzz/`) and this crate's property test call it. Not a
//! stable API (only built for tests and with the `fuzzing` feature).
#![allow(clippy::unwrap_used)]

use imstatus_core::{Availability, Status};
use zbus::message::Message;
use zbus::zvariant::{ObjectPath, StructureBuilder, Value};

use crate::gate::Gate;
use crate::signal::{self, CONTACT_MEMBERS, DBUS_NAME, PURPLE_INTERFACE, PURPLE_MEMBERS};
use crate::translate::{AccountRead, ClientRead, Conn, Need, StatusRead, Translator};

const OWNER: &str = ":1.7";
/// A peer whose name is none of the generated strings, so never libpurple's owner.
const STRANGER: &str = ":9.99";
/// Signals per case; with `CASES` cases at least 100,000 bodies are tried.
const PER_CASE: usize = 128;
const CASES: u32 = 800;
const _: () = assert!(PER_CASE * CASES as usize >= 100_000);

/// One argument of a generated body.
#[derive(Clone, Debug)]
enum Arg {
    I32(i32),
    U32(u32),
    I64(i64),
    U64(u64),
    U8(u8),
    Bool(bool),
    F64(f64),
    Str(String),
    Path,
    Ints(Vec<i32>),
    Strs(Vec<String>),
    Struct(Vec<Arg>),
    Variant(Box<Arg>),
}

impl Arg {
    fn value(&self) -> Value<'static> {
        match self {
            Arg::I32(i) => Value::from(*i),
            Arg::U32(i) => Value::from(*i),
            Arg::I64(i) => Value::from(*i),
            Arg::U64(i) => Value::from(*i),
            Arg::U8(i) => Value::from(*i),
            Arg::Bool(b) => Value::from(*b),
            Arg::F64(f) => Value::from(*f),
            Arg::Str(s) => Value::from(s.clone()),
            Arg::Path => Value::from(ObjectPath::from_static_str_unchecked("/im/pidgin/x")),
            Arg::Ints(v) => Value::from(v.clone()),
            Arg::Strs(v) => Value::from(v.clone()),
            Arg::Struct(fields) => Value::from(structure(fields)),
            Arg::Variant(inner) => Value::Value(Box::new(inner.value())),
        }
    }
}

fn structure(fields: &[Arg]) -> zbus::zvariant::Structure<'static> {
    fields
        .iter()
        .fold(StructureBuilder::new(), |b, f| b.append_field(f.value()))
        .build()
        .unwrap()
}

/// Handles the translator knows, and numbers around them and at the edges.
const INTS: &[i32] = &[0, 1, 2, 5, 86, 90, 148, 149, 151, -1, i32::MAX, i32::MIN];
/// Strings worth trying, integers written as strings (P14) among them.
const STRINGS: &[&str] = &[
    "",
    "86",
    " 86 ",
    "-1",
    "99999999999",
    "System Shutdown",
    OWNER,
    ":1.66",
    "im.pidgin.purple.PurpleService",
    "org.freedesktop.DBus",
];
/// libpurple, the bus, a peer that the bus may name libpurple's owner (":1.66" is among the
/// strings), one it never does, and no sender at all.
const SENDERS: &[Option<&str>] = &[
    Some(OWNER),
    Some(DBUS_NAME),
    Some(":1.66"),
    Some(STRANGER),
    None,
];
const INTERFACES: &[&str] = &[
    PURPLE_INTERFACE,
    PURPLE_INTERFACE,
    DBUS_NAME,
    "org.example.X",
];
const OTHER_MEMBERS: &[&str] = &["NameOwnerChanged", "JabberSendingText", "NameAcquired", "X"];

/// Reads a signal out of random bytes, the way a fuzzer's input becomes a structured value:
/// generating the bytes is cheap, and shrinking them shrinks the signal. Past the end, every
/// byte is 0 (the first choice of each kind).
struct Bytes<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.bytes.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[usize::from(self.byte()) % from.len()]
    }

    fn int(&mut self) -> i32 {
        if self.byte() < 128 {
            self.pick(INTS)
        } else {
            i32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
        }
    }

    fn string(&mut self) -> String {
        match self.byte() % 4 {
            0 | 1 => self.pick(STRINGS).to_owned(),
            2 => self.int().to_string(),
            // Any characters, multi-byte ones included.
            _ => (0..self.byte() % 12)
                .map(|_| {
                    let c = u32::from(self.byte()) * 37 + u32::from(self.byte());
                    char::from_u32(c).unwrap_or('\u{fffd}')
                })
                .collect(),
        }
    }

    fn arg(&mut self, depth: u8) -> Arg {
        match self.byte() % 16 {
            0..=4 => Arg::I32(self.int()),
            5..=7 => Arg::Str(self.string()),
            8 => Arg::U32(self.int() as u32),
            9 => Arg::I64(i64::from_le_bytes(std::array::from_fn(|_| self.byte()))),
            10 => Arg::U64(u64::from(self.int() as u32) << (self.byte() % 40)),
            11 => Arg::U8(self.byte()),
            12 => match self.byte() % 3 {
                0 => Arg::Bool(self.byte() % 2 == 0),
                1 => Arg::F64(f64::from(self.int()) / 3.0),
                _ => Arg::Path,
            },
            13 => match self.byte() % 2 {
                0 => Arg::Ints((0..self.byte() % 4).map(|_| self.int()).collect()),
                _ => Arg::Strs((0..self.byte() % 3).map(|_| self.string()).collect()),
            },
            14 if depth < 3 => Arg::Struct(
                (0..1 + self.byte() % 3)
                    .map(|_| self.arg(depth + 1))
                    .collect(),
            ),
            15 if depth < 3 => Arg::Variant(Box::new(self.arg(depth + 1))),
            _ => Arg::I32(self.int()),
        }
    }

    /// Arguments in the shapes libpurple and the bus use (recipe §4), with any values and
    /// sometimes a string where an integer belongs (P14); or arguments of any shape at all.
    fn args(&mut self) -> Vec<Arg> {
        let either = |b: &mut Self| {
            if b.byte() % 4 == 0 {
                Arg::Str(b.string())
            } else {
                Arg::I32(b.int())
            }
        };
        match self.byte() % 8 {
            0 => Vec::new(),
            1 => vec![either(self)],
            2 => vec![either(self), Arg::I32(self.int())],
            3 => vec![either(self), either(self), Arg::I32(self.int())],
            4 => vec![either(self), either(self), Arg::Str(self.string())],
            5 => vec![
                Arg::Str(self.string()),
                Arg::Str(self.string()),
                Arg::Str(self.string()),
            ],
            _ => (0..1 + self.byte() % 4).map(|_| self.arg(0)).collect(),
        }
    }

    fn wire(&mut self) -> Wire {
        let sender = self.pick(SENDERS);
        let interface = self.pick(INTERFACES);
        let listened = PURPLE_MEMBERS.len() + CONTACT_MEMBERS.len();
        let n = usize::from(self.byte()) % (listened + OTHER_MEMBERS.len());
        let member = PURPLE_MEMBERS
            .iter()
            .chain(CONTACT_MEMBERS)
            .chain(OTHER_MEMBERS)
            .nth(n)
            .copied()
            .unwrap_or("X");
        (sender, interface, member, self.args())
    }
}

/// One received signal: (sender, interface, member, arguments).
type Wire = (Option<&'static str>, &'static str, &'static str, Vec<Arg>);

fn message((sender, interface, member, args): &Wire) -> Message {
    let mut builder =
        Message::signal("/im/pidgin/purple/PurpleObject", *interface, *member).unwrap();
    if let Some(sender) = sender {
        builder = builder.sender(*sender).unwrap();
    }
    if args.is_empty() {
        builder.build(&()).unwrap()
    } else {
        builder.build(&structure(args)).unwrap()
    }
}

/// A translator that has read a client with two accounts and a current saved status.
fn synced(contacts: bool) -> Translator<u64> {
    let mut t = Translator::new(Vec::new(), contacts);
    let account = |handle, username: &str, conn| AccountRead {
        handle,
        username: username.to_owned(),
        conn,
        gc: 148,
        read_at: 10,
    };
    t.handle_sync(ClientRead {
        owner: Some(OWNER.to_owned()),
        owner_read_at: 10,
        accounts: vec![
            account(86, "alice@example.test/finch", Conn::Connected),
            account(90, "bob@example.test/finch", Conn::Disconnected),
        ],
        status: Some(StatusRead {
            saved: 149,
            status: Status::new(Availability::Available),
            read_at: 10,
            current_at: Some(10),
        }),
        contacts: Vec::new(),
    });
    t
}

/// Reads signals out of `bytes` (48 bytes each; the first byte says whether contacts are
/// tracked) and feeds them, as received from the bus, through the gate, the parser and a
/// translator that has read a client; answers what the translator asks, as the driver would.
/// Panics if a stranger's signal gets past the gate or changes anything.
pub fn signals(bytes: &[u8]) {
    let contacts = bytes.first().is_some_and(|b| b % 2 == 1);
    let mut t = synced(contacts);
    let mut gate = Gate::new();
    gate.learn(Some(OWNER), 10);
    for (n, chunk) in bytes.get(1..).unwrap_or_default().chunks(48).enumerate() {
        let at = 11 + n as u64;
        let w = Bytes {
            bytes: chunk,
            at: 0,
        }
        .wire();
        let msg = message(&w);
        let header = msg.header();
        let owner_change = || {
            msg.body()
                .deserialize::<(String, String, String)>()
                .ok()
                .map(|(name, _, new)| (name, new))
        };
        let admitted = gate.admit(
            at,
            header.sender().map(|s| s.as_str()),
            header.interface().map(|i| i.as_str()),
            header.member().map(|m| m.as_str()),
            owner_change,
        );
        let sender = w.0;
        let stranger = matches!(sender, Some(STRANGER) | None);
        assert!(!(stranger && admitted), "{w:?} got past the gate");
        let Ok(Some(signal)) = signal::parse(&msg) else {
            continue;
        };
        // Answer what the translator asks, as the driver would (up to three lookups).
        for _ in 0..3 {
            let outcome = t.handle_signal(at, sender, &signal);
            if stranger {
                assert_eq!(outcome, Default::default(), "{w:?} changed something");
            }
            match outcome.need {
                Some(Need::Username(h)) => t.learn_account(h, Some("carol@example.test/x")),
                Some(Need::ConnectionAccount(gc)) => t.learn_connection(gc, Some(86)),
                Some(Need::Saved(saved)) => {
                    t.handle_saved(StatusRead {
                        saved,
                        status: Status::with_message(Availability::Away, "x"),
                        read_at: at,
                        current_at: None,
                    });
                    break;
                }
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

        #[test]
        fn no_signal_body_from_anyone_panics_the_gate_the_parser_or_the_translator(
            bytes in prop::collection::vec(any::<u8>(), 1 + 48 * PER_CASE),
        ) {
            signals(&bytes);
        }
    }
}
