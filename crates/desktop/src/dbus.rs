//! D-Bus plumbing shared by the idle and lock backends: connecting, typed calls with error
//! codes, and [`Watch`], which delivers the signals of one well-known name's *current owner*
//! only.
//!
//! A peer that does not own the name (a spoofer on the session bus) can send signals with
//! the right interface and member, broadcast or addressed to us: they are dropped, because
//! each signal's sender is compared with the owner the bus reported (`GetNameOwner`, then
//! `NameOwnerChanged`), not with what the message claims.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use zbus::message::{Flags, Message, Type};
use zbus::zvariant::{DynamicDeserialize, DynamicType, OwnedValue};
use zbus::{Connection, MessageStream};

use crate::error::{Error, Result};

/// How long connecting to a bus may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one method call may take.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(5);

const DBUS_NAME: &str = "org.freedesktop.DBus";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// Which bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bus {
    /// The user's session bus.
    Session,
    /// The system bus.
    System,
}

/// "the session bus (ADDRESS)" for messages.
pub(crate) fn describe(bus: Bus, address: Option<&str>) -> String {
    let (name, var) = match bus {
        Bus::Session => ("session bus", "DBUS_SESSION_BUS_ADDRESS"),
        Bus::System => ("system bus", "DBUS_SYSTEM_BUS_ADDRESS"),
    };
    match address {
        Some(a) => format!("the {name} at {a}"),
        None => match std::env::var(var) {
            Ok(a) if !a.is_empty() => format!("the {name} ({a})"),
            _ if bus == Bus::System => format!("the {name}"),
            _ => format!("the {name} ({var} is not set)"),
        },
    }
}

/// Connects to `address`, or to the bus's standard address.
pub(crate) async fn connect(bus: Bus, address: Option<&str>) -> Result<Connection> {
    let build = async {
        let builder = match (address, bus) {
            (Some(a), _) => zbus::connection::Builder::address(a)?,
            (None, Bus::Session) => zbus::connection::Builder::session()?,
            (None, Bus::System) => zbus::connection::Builder::system()?,
        };
        builder.method_timeout(CALL_TIMEOUT).build().await
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, build).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(match &e {
            zbus::Error::InputOutput(io) => {
                crate::error::from_io(format!("cannot connect to {}", describe(bus, address)), io)
            }
            _ => Error::NotRunning(format!("cannot connect to {}: {e}", describe(bus, address))),
        }),
        Err(_) => Err(Error::Timeout(format!(
            "cannot connect to {}: no answer within {CONNECT_TIMEOUT:?}",
            describe(bus, address)
        ))),
    }
}

/// A failed call as this crate's error.
pub(crate) fn error(what: &str, e: zbus::Error) -> Error {
    let text = format!("{what}: {e}");
    match &e {
        zbus::Error::MethodError(name, _, _) => match name.as_str() {
            "org.freedesktop.DBus.Error.ServiceUnknown"
            | "org.freedesktop.DBus.Error.NameHasNoOwner"
            | "org.freedesktop.DBus.Error.Disconnected" => Error::NotRunning(text),
            "org.freedesktop.DBus.Error.UnknownMethod"
            | "org.freedesktop.DBus.Error.UnknownObject"
            | "org.freedesktop.DBus.Error.UnknownInterface"
            | "org.freedesktop.DBus.Error.UnknownProperty"
            | "org.freedesktop.DBus.Error.NotSupported" => Error::Unsupported(text),
            "org.freedesktop.DBus.Error.AccessDenied" => Error::Denied(text),
            "org.freedesktop.DBus.Error.NoReply" | "org.freedesktop.DBus.Error.Timeout" => {
                Error::Timeout(text)
            }
            _ => Error::Protocol(text),
        },
        zbus::Error::InputOutput(io) => crate::error::from_io(what, io),
        _ => Error::Protocol(text),
    }
}

/// Calls a method and reads its reply as `R` (a reply of another type is a protocol error).
pub(crate) async fn call<R, B>(
    conn: &Connection,
    dest: &str,
    path: &str,
    interface: &str,
    method: &str,
    body: &B,
) -> Result<R>
where
    R: for<'d> DynamicDeserialize<'d>,
    B: zbus::export::serde::Serialize + DynamicType,
{
    let what = format!("{interface}.{method}");
    let reply = conn
        .call_method(Some(dest), path, Some(interface), method, body)
        .await
        .map_err(|e| error(&what, e))?;
    let body = reply.body();
    body.deserialize::<R>().map_err(|e| {
        Error::Protocol(format!(
            "{what} answered `{}`, not the expected type: {e}",
            body.signature()
        ))
    })
}

/// Reads a property with `org.freedesktop.DBus.Properties.Get`.
pub(crate) async fn property(
    conn: &Connection,
    dest: &str,
    path: &str,
    interface: &str,
    name: &str,
) -> Result<OwnedValue> {
    call::<OwnedValue, _>(conn, dest, path, PROPERTIES, "Get", &(interface, name))
        .await
        .map_err(|e| e.context(format!("{interface}.{name}")))
}

/// A boolean property.
pub(crate) async fn bool_property(
    conn: &Connection,
    dest: &str,
    path: &str,
    interface: &str,
    name: &str,
) -> Result<bool> {
    let value = property(conn, dest, path, interface, name).await?;
    bool::try_from(&value).map_err(|_| {
        Error::Protocol(format!(
            "{interface}.{name} is `{}`, not a boolean",
            value.value_signature()
        ))
    })
}

/// A `PropertiesChanged` signal's body: interface, changed values, invalidated names.
pub(crate) type PropertiesChanged = (String, HashMap<String, OwnedValue>, Vec<String>);

/// What a [`Watch`] yields.
#[derive(Debug)]
pub(crate) enum Next {
    /// The name's owner changed (`None`: nobody owns it now).
    Owner(Option<String>),
    /// A signal from the current owner.
    Signal(Message),
}

/// The signals of one well-known name's current owner, and its owner changes.
pub(crate) struct Watch {
    conn: Connection,
    stream: MessageStream,
    name: &'static str,
    owner: Option<String>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("name", &self.name)
            .field("owner", &self.owner)
            .finish()
    }
}

impl Watch {
    /// Opens the message stream, subscribes to `name`'s owner changes and to `rules` (each
    /// limited to signals from `name`), then asks who owns it. The stream exists before any
    /// rule, so nothing sent after the question is missed.
    pub(crate) async fn new(
        conn: &Connection,
        name: &'static str,
        rules: &[String],
    ) -> Result<Self> {
        let stream = MessageStream::from(conn);
        let mut watch = Watch {
            conn: conn.clone(),
            stream,
            name,
            owner: None,
        };
        watch
            .add_rule(&format!(
                "type='signal',sender='{DBUS_NAME}',interface='{DBUS_NAME}',\
                 member='NameOwnerChanged',arg0='{name}'"
            ))
            .await?;
        for rule in rules {
            watch.add_signal_rule(rule).await?;
        }
        let owner = call::<String, _>(
            conn,
            DBUS_NAME,
            "/org/freedesktop/DBus",
            DBUS_NAME,
            "GetNameOwner",
            &(name,),
        )
        .await;
        watch.owner = match owner {
            Ok(owner) => Some(owner),
            Err(Error::NotRunning(_)) => None,
            Err(e) => return Err(e),
        };
        Ok(watch)
    }

    /// The unique name owning the name now.
    pub(crate) fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// Adds a match rule for signals from the name (`rule` without `sender`).
    pub(crate) async fn add_signal_rule(&mut self, rule: &str) -> Result<()> {
        let rule = format!("type='signal',sender='{}',{rule}", self.name);
        self.add_rule(&rule).await
    }

    async fn add_rule(&mut self, rule: &str) -> Result<()> {
        // Sent without waiting for the reply: the bus handles our messages in order, so a
        // query sent after this sees the rule in place.
        let msg = Message::method_call("/org/freedesktop/DBus", "AddMatch")
            .and_then(|b| b.destination(DBUS_NAME))
            .and_then(|b| b.interface(DBUS_NAME))
            .and_then(|b| b.with_flags(Flags::NoReplyExpected))
            .and_then(|b| b.build(&(rule,)))
            .map_err(|e| Error::Protocol(format!("building AddMatch({rule}): {e}")))?;
        self.conn.send(&msg).await.map_err(|e| error("AddMatch", e))
    }

    /// The next owner change or signal from the owner; other messages are dropped. `Err` when
    /// the connection is lost.
    pub(crate) async fn next(&mut self) -> Result<Next> {
        loop {
            let msg = match self.stream.next().await {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => return Err(error("reading from the bus", e)),
                None => return Err(Error::Lost("the bus closed the connection".into())),
            };
            if msg.message_type() != Type::Signal {
                continue;
            }
            let header = msg.header();
            let sender = header.sender().map(|s| s.as_str());
            if sender == Some(DBUS_NAME)
                && header.member().map(|m| m.as_str()) == Some("NameOwnerChanged")
            {
                let Ok((name, _old, new)) = msg.body().deserialize::<(String, String, String)>()
                else {
                    continue;
                };
                if name == self.name {
                    self.owner = (!new.is_empty()).then_some(new);
                    return Ok(Next::Owner(self.owner.clone()));
                }
                continue;
            }
            if sender.is_some() && sender == self.owner.as_deref() {
                return Ok(Next::Signal(msg));
            }
            tracing::debug!(
                name = self.name,
                ?sender,
                "dropped a signal that does not come from the name's owner"
            );
        }
    }
}

/// The signal's interface and member.
pub(crate) fn member(msg: &Message) -> (Option<String>, Option<String>) {
    let header = msg.header();
    (
        header.interface().map(|i| i.to_string()),
        header.member().map(|m| m.to_string()),
    )
}

/// The signal's object path.
pub(crate) fn path(msg: &Message) -> Option<String> {
    msg.header().path().map(|p| p.to_string())
}

/// Reads a signal's body as `T`, or says what it was instead.
pub(crate) fn body<T>(msg: &Message, what: &str) -> Result<T>
where
    T: for<'d> DynamicDeserialize<'d>,
{
    let body = msg.body();
    body.deserialize::<T>().map_err(|e| {
        Error::Protocol(format!(
            "{what} with a body of type `{}`: {e}",
            body.signature()
        ))
    })
}
