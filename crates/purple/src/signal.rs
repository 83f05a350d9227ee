//! D-Bus signals as libpurple actually sends them, parsed defensively (recipe §4, P14).
//!
//! libpurple's introspection data is wrong about some argument types (P14), so nothing here is
//! generated from it. Each signal is first read with the signature the recipe documents; when
//! the body has another signature, its arguments are read one by one and integers written as
//! strings are accepted. A body that still does not fit is an error string the caller turns into
//! an `anomaly`: never a panic, never the end of the source.

use zbus::message::{Message, Type};
use zbus::zvariant::{Structure, Value};

/// The bus daemon's name, and the interface of `NameOwnerChanged`.
pub(crate) const DBUS_NAME: &str = "org.freedesktop.DBus";
/// libpurple's well-known bus name.
pub(crate) const PURPLE_SERVICE: &str = "im.pidgin.purple.PurpleService";
/// libpurple's object path.
pub(crate) const PURPLE_PATH: &str = "/im/pidgin/purple/PurpleObject";
/// libpurple's interface.
pub(crate) const PURPLE_INTERFACE: &str = "im.pidgin.purple.PurpleInterface";

/// The libpurple signals the source listens to (one bus match rule each, so that noise such as
/// `JabberSendingText` never reaches the process).
pub(crate) const PURPLE_MEMBERS: &[&str] = &[
    "Quitting",
    "AccountConnecting",
    "AccountSignedOn",
    "AccountSignedOff",
    "SigningOff",
    "SignedOn",
    "AccountStatusChanged",
    "SavedstatusChanged",
    "SavedstatusAdded",
    "SavedstatusModified",
    "AccountConnectionError",
    "ConnectionError",
];

/// The libpurple signals the source listens to only when it tracks contacts.
pub(crate) const CONTACT_MEMBERS: &[&str] =
    &["BuddyStatusChanged", "BuddySignedOn", "BuddySignedOff"];

/// One signal the source cares about, with its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    /// `NameOwnerChanged(s name, s old, s new)` from the bus.
    NameOwnerChanged {
        /// The bus name.
        name: String,
        /// The old owner (`""` = none).
        old: String,
        /// The new owner (`""` = none).
        new: String,
    },
    /// `Quitting()`: libpurple shuts itself down.
    Quitting,
    /// `AccountConnecting(i account)`.
    AccountConnecting(i32),
    /// `AccountSignedOn(i account)`.
    AccountSignedOn(i32),
    /// `AccountSignedOff(i account)`.
    AccountSignedOff(i32),
    /// `SigningOff(i gc)`: a connection handle, not an account.
    SigningOff(i32),
    /// `SignedOn(i gc)`: right after `AccountSignedOn`; tells the connection handle.
    SignedOn(i32),
    /// `AccountStatusChanged(i account, i old, i new)`.
    AccountStatusChanged(i32),
    /// `SavedstatusChanged(i new, i old)`.
    SavedstatusChanged(i32),
    /// `SavedstatusAdded(i saved)`.
    SavedstatusAdded(i32),
    /// `SavedstatusModified(i saved)`.
    SavedstatusModified(i32),
    /// `AccountConnectionError(i account, i code, s text)`.
    AccountConnectionError {
        /// The account handle.
        account: i32,
        /// `PurpleConnectionError`.
        code: i32,
        /// The human text ("System Shutdown").
        text: String,
    },
    /// `ConnectionError(i gc, i code, s text)`.
    ConnectionError {
        /// The connection handle.
        gc: i32,
        /// `PurpleConnectionError`.
        code: i32,
        /// The human text.
        text: String,
    },
    /// `BuddyStatusChanged(i buddy, i old, i new)`, `BuddySignedOn(i buddy)`,
    /// `BuddySignedOff(i buddy)`.
    Buddy(i32),
}

/// Reads a signal. `Ok(None)`: not a signal the source listens to (ignored silently).
/// `Err`: a signal it listens to whose body does not fit (reported as an anomaly).
pub(crate) fn parse(msg: &Message) -> Result<Option<Signal>, String> {
    if msg.message_type() != Type::Signal {
        return Ok(None);
    }
    let header = msg.header();
    let (Some(interface), Some(member)) = (header.interface(), header.member()) else {
        return Ok(None);
    };
    let body = msg.body();
    let signature = body.signature().to_string();
    let args = || -> Result<Vec<Value<'_>>, String> {
        if body.is_empty() {
            return Ok(Vec::new());
        }
        body.deserialize::<Structure<'_>>()
            .map(|s| s.into_fields())
            .map_err(|e| format!("unreadable body ({signature}): {e}"))
    };
    let member = member.as_str();
    let parsed = match interface.as_str() {
        DBUS_NAME if member == "NameOwnerChanged" => {
            match body.deserialize::<(String, String, String)>() {
                Ok((name, old, new)) => Signal::NameOwnerChanged { name, old, new },
                Err(_) => {
                    let a = Args::new(member, &signature, args()?);
                    Signal::NameOwnerChanged {
                        name: a.string(0)?,
                        old: a.string(1)?,
                        new: a.string(2)?,
                    }
                }
            }
        }
        PURPLE_INTERFACE => {
            // The fast path: the documented signature.
            let first_int = || match body.deserialize::<(i32,)>() {
                Ok((i,)) => Ok(i),
                Err(_) => Args::new(member, &signature, args()?).int(0),
            };
            let first_of_three = || match body.deserialize::<(i32, i32, i32)>() {
                Ok((i, _, _)) => Ok(i),
                Err(_) => Args::new(member, &signature, args()?).int(0),
            };
            let error = || match body.deserialize::<(i32, i32, String)>() {
                Ok(t) => Ok(t),
                Err(_) => {
                    let a = Args::new(member, &signature, args()?);
                    Ok::<_, String>((a.int(0)?, a.int(1)?, a.string(2)?))
                }
            };
            match member {
                "Quitting" => Signal::Quitting,
                "AccountConnecting" => Signal::AccountConnecting(first_int()?),
                "AccountSignedOn" => Signal::AccountSignedOn(first_int()?),
                "AccountSignedOff" => Signal::AccountSignedOff(first_int()?),
                "SigningOff" => Signal::SigningOff(first_int()?),
                "SignedOn" => Signal::SignedOn(first_int()?),
                "AccountStatusChanged" => Signal::AccountStatusChanged(first_of_three()?),
                "SavedstatusChanged" => match body.deserialize::<(i32, i32)>() {
                    Ok((new, _)) => Signal::SavedstatusChanged(new),
                    Err(_) => {
                        Signal::SavedstatusChanged(Args::new(member, &signature, args()?).int(0)?)
                    }
                },
                "SavedstatusAdded" => Signal::SavedstatusAdded(first_int()?),
                "SavedstatusModified" => Signal::SavedstatusModified(first_int()?),
                "AccountConnectionError" => {
                    let (account, code, text) = error()?;
                    Signal::AccountConnectionError {
                        account,
                        code,
                        text,
                    }
                }
                "ConnectionError" => {
                    let (gc, code, text) = error()?;
                    Signal::ConnectionError { gc, code, text }
                }
                "BuddyStatusChanged" => Signal::Buddy(first_of_three()?),
                "BuddySignedOn" | "BuddySignedOff" => Signal::Buddy(first_int()?),
                _ => return Ok(None),
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(parsed))
}

/// The arguments of a body whose signature was not the documented one.
struct Args<'a> {
    member: &'a str,
    signature: &'a str,
    values: Vec<Value<'a>>,
}

impl<'a> Args<'a> {
    fn new(member: &'a str, signature: &'a str, values: Vec<Value<'a>>) -> Self {
        Args {
            member,
            signature,
            values,
        }
    }

    fn bad(&self, n: usize, want: &str) -> String {
        format!(
            "D-Bus signal {}: argument {n} is not {want} (body signature `{}`)",
            self.member, self.signature
        )
    }

    /// Argument `n` as an int32: any integer type that fits, or a string of digits (P14).
    fn int(&self, n: usize) -> Result<i32, String> {
        let v = self.values.get(n).ok_or_else(|| self.bad(n, "present"))?;
        let wide: Option<i64> = match v {
            Value::I32(i) => Some(i64::from(*i)),
            Value::U32(i) => Some(i64::from(*i)),
            Value::I16(i) => Some(i64::from(*i)),
            Value::U16(i) => Some(i64::from(*i)),
            Value::U8(i) => Some(i64::from(*i)),
            Value::I64(i) => Some(*i),
            Value::U64(i) => i64::try_from(*i).ok(),
            Value::Str(s) => s.as_str().trim().parse().ok(),
            _ => None,
        };
        wide.and_then(|w| i32::try_from(w).ok())
            .ok_or_else(|| self.bad(n, "an int32 handle or number"))
    }

    /// Argument `n` as a string.
    fn string(&self, n: usize) -> Result<String, String> {
        match self.values.get(n) {
            Some(Value::Str(s)) => Ok(s.as_str().to_owned()),
            _ => Err(self.bad(n, "a string")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purple<B>(member: &str, body: &B) -> Message
    where
        B: zbus::export::serde::Serialize + zbus::zvariant::DynamicType,
    {
        Message::signal(PURPLE_PATH, PURPLE_INTERFACE, member)
            .expect("valid names")
            .sender(":1.7")
            .expect("valid sender")
            .build(body)
            .expect("serialisable body")
    }

    #[test]
    fn documented_signatures_are_read() {
        assert_eq!(
            parse(&purple("AccountSignedOn", &(86i32,))),
            Ok(Some(Signal::AccountSignedOn(86)))
        );
        assert_eq!(
            parse(&purple("AccountStatusChanged", &(86i32, 150i32, 151i32))),
            Ok(Some(Signal::AccountStatusChanged(86)))
        );
        assert_eq!(
            parse(&purple("SavedstatusChanged", &(160i32, 149i32))),
            Ok(Some(Signal::SavedstatusChanged(160)))
        );
        assert_eq!(
            parse(&purple(
                "AccountConnectionError",
                &(86i32, 0i32, "System Shutdown")
            )),
            Ok(Some(Signal::AccountConnectionError {
                account: 86,
                code: 0,
                text: "System Shutdown".into()
            }))
        );
        assert_eq!(parse(&purple("Quitting", &())), Ok(Some(Signal::Quitting)));
        let noc = Message::signal("/org/freedesktop/DBus", DBUS_NAME, "NameOwnerChanged")
            .expect("names")
            .build(&(PURPLE_SERVICE, "", ":1.7"))
            .expect("body");
        assert_eq!(
            parse(&noc),
            Ok(Some(Signal::NameOwnerChanged {
                name: PURPLE_SERVICE.into(),
                old: String::new(),
                new: ":1.7".into()
            }))
        );
    }

    #[test]
    fn integers_sent_as_strings_are_accepted() {
        // P14: introspection says `i` where the wire may carry `s`.
        assert_eq!(
            parse(&purple("AccountSignedOff", &("86",))),
            Ok(Some(Signal::AccountSignedOff(86)))
        );
        assert_eq!(
            parse(&purple(
                "AccountConnectionError",
                &("86", 2u32, "Not authorized")
            )),
            Ok(Some(Signal::AccountConnectionError {
                account: 86,
                code: 2,
                text: "Not authorized".into()
            }))
        );
    }

    #[test]
    fn bodies_that_do_not_fit_are_errors_not_panics() {
        let e = parse(&purple("AccountSignedOn", &("eighty-six",))).expect_err("bad handle");
        assert!(
            e.contains("AccountSignedOn") && e.contains("argument 0"),
            "{e}"
        );
        let e = parse(&purple("AccountConnecting", &())).expect_err("no argument");
        assert!(e.contains("argument 0 is not present"), "{e}");
        let e = parse(&purple("AccountConnectionError", &(86i32, 0i32, 5i32))).expect_err("text");
        assert!(e.contains("argument 2 is not a string"), "{e}");
        let e = parse(&purple("SigningOff", &(i64::MAX,))).expect_err("out of range");
        assert!(e.contains("SigningOff"), "{e}");
    }

    #[test]
    fn other_members_and_interfaces_are_ignored() {
        assert_eq!(
            parse(&purple("JabberSendingText", &(148i32, "<presence/>"))),
            Ok(None)
        );
        let other = Message::signal("/x", "org.example.Other", "AccountSignedOn")
            .expect("names")
            .build(&(86i32,))
            .expect("body");
        assert_eq!(parse(&other), Ok(None));
    }
}
