//! The D-Bus side: connecting, match rules, typed libpurple calls, the queries the source
//! makes and the mapping of D-Bus errors to imstatus error codes.
//!
//! Calls go through [`zbus::Connection::call_method`] on the one connection the source keeps
//! (no proxies: libpurple's introspection is wrong, P14, and introspecting costs a round trip,
//! P15). Independent calls are issued together and awaited together, so a query costs round
//! trips, not calls.

use std::time::Duration;

use futures_util::future::join_all;
use imstatus_core::{Availability, CodedError, ErrorCode, Status};
use zbus::message::{Flags, Message, Sequence};
use zbus::zvariant::{DynamicDeserialize, DynamicType};
use zbus::{Connection, MessageStream};

use crate::error::Error;
use crate::signal::{
    CONTACT_MEMBERS, DBUS_NAME, PURPLE_INTERFACE, PURPLE_MEMBERS, PURPLE_PATH, PURPLE_SERVICE,
};
use crate::translate::{AccountRead, BuddyRead, ClientRead, Conn, StatusRead};

/// How long connecting to the bus (socket, authentication, `Hello`) may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one method call may take (a stopped client never answers).
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// "the session bus" or "the bus at ADDRESS", for messages.
pub(crate) fn describe(bus: Option<&str>) -> String {
    match bus {
        Some(address) => format!("the D-Bus bus at {address}"),
        None => match std::env::var("DBUS_SESSION_BUS_ADDRESS") {
            Ok(address) if !address.is_empty() => format!("the session bus ({address})"),
            _ => "the session bus (DBUS_SESSION_BUS_ADDRESS is not set)".to_owned(),
        },
    }
}

/// Connects to `bus` (a D-Bus address) or the session bus.
pub(crate) async fn connect(bus: Option<&str>) -> Result<Connection, Error> {
    let build = async {
        let builder = match bus {
            Some(address) => zbus::connection::Builder::address(address)?,
            None => zbus::connection::Builder::session()?,
        };
        builder.method_timeout(CALL_TIMEOUT).build().await
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, build).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(source)) => Err(Error::Connect {
            bus: describe(bus),
            source: Box::new(source),
        }),
        Err(_) => Err(Error::ConnectTimeout {
            bus: describe(bus),
            after: CONNECT_TIMEOUT,
        }),
    }
}

/// A stream of every message the connection receives, created before any match rule so that
/// nothing is missed.
pub(crate) fn messages(conn: &Connection) -> MessageStream {
    MessageStream::from(conn)
}

/// The bus match rules: `NameOwnerChanged` of libpurple's name from the bus itself, and one
/// rule per libpurple signal the source handles, from the current owner of libpurple's name
/// only (the bus resolves `sender='im.pidgin.purple.PurpleService'` when it delivers), so that
/// nobody else's broadcasts reach the process. Signals sent straight to our unique name bypass
/// every match rule: the pump's gate (module `gate`) checks the sender of those.
pub(crate) fn match_rules(contacts: bool) -> Vec<String> {
    let mut rules = vec![format!(
        "type='signal',sender='{DBUS_NAME}',interface='{DBUS_NAME}',member='NameOwnerChanged',\
         arg0='{PURPLE_SERVICE}'"
    )];
    let contact_members: &[&str] = if contacts { CONTACT_MEMBERS } else { &[] };
    let members = PURPLE_MEMBERS.iter().chain(contact_members);
    for member in members {
        rules.push(format!(
            "type='signal',sender='{PURPLE_SERVICE}',interface='{PURPLE_INTERFACE}',\
             member='{member}'"
        ));
    }
    rules
}

/// Installs the match rules without waiting for replies: the bus handles a connection's
/// messages in order, so every query sent after this sees the rules in place.
pub(crate) async fn add_matches(conn: &Connection, contacts: bool) -> zbus::Result<()> {
    for rule in match_rules(contacts) {
        let msg = Message::method_call("/org/freedesktop/DBus", "AddMatch")?
            .destination(DBUS_NAME)?
            .interface(DBUS_NAME)?
            .with_flags(Flags::NoReplyExpected)?
            .build(&(rule.as_str(),))?;
        conn.send(&msg).await?;
    }
    Ok(())
}

/// Calls a method and reads its reply; also returns where the reply was received.
async fn call<R, B>(
    conn: &Connection,
    dest: &str,
    path: &str,
    interface: &str,
    method: &str,
    body: B,
) -> zbus::Result<(R, Sequence)>
where
    R: for<'d> DynamicDeserialize<'d>,
    B: zbus::export::serde::Serialize + DynamicType,
{
    let reply = conn
        .call_method(Some(dest), path, Some(interface), method, &body)
        .await?;
    let value = reply.body().deserialize::<R>()?;
    Ok((value, reply.recv_position()))
}

/// Calls `im.pidgin.purple.PurpleInterface.<method>`.
pub(crate) async fn purple<R, B>(
    conn: &Connection,
    method: &str,
    body: B,
) -> zbus::Result<(R, Sequence)>
where
    R: for<'d> DynamicDeserialize<'d>,
    B: zbus::export::serde::Serialize + DynamicType,
{
    call(
        conn,
        PURPLE_SERVICE,
        PURPLE_PATH,
        PURPLE_INTERFACE,
        method,
        body,
    )
    .await
}

/// Calls a libpurple method returning one int32 (a handle, a boolean or a number).
pub(crate) async fn purple_int<B>(
    conn: &Connection,
    method: &str,
    body: B,
) -> zbus::Result<(i32, Sequence)>
where
    B: zbus::export::serde::Serialize + DynamicType,
{
    purple::<i32, B>(conn, method, body).await
}

/// Calls a libpurple method returning one string (`""` for NULL).
pub(crate) async fn purple_string<B>(
    conn: &Connection,
    method: &str,
    body: B,
) -> zbus::Result<String>
where
    B: zbus::export::serde::Serialize + DynamicType,
{
    purple::<String, B>(conn, method, body)
        .await
        .map(|(s, _)| s)
}

/// The unique name owning libpurple's name: `Ok(None)` when none; also returns where the
/// answer was received.
pub(crate) async fn name_owner(conn: &Connection) -> zbus::Result<(Option<String>, Sequence)> {
    let result = call::<String, _>(
        conn,
        DBUS_NAME,
        "/org/freedesktop/DBus",
        DBUS_NAME,
        "GetNameOwner",
        (PURPLE_SERVICE,),
    )
    .await;
    match result {
        Ok((owner, at)) => Ok((Some(owner), at)),
        Err(zbus::Error::MethodError(name, _, reply))
            if name.as_str().ends_with(".NameHasNoOwner") =>
        {
            Ok((None, reply.recv_position()))
        }
        Err(e) => Err(e),
    }
}

/// The D-Bus error name of a failed call, if it was an error reply.
fn error_name(e: &zbus::Error) -> Option<&str> {
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.as_str()),
        _ => None,
    }
}

/// Did the call fail because libpurple's name has no owner (any more)?
pub(crate) fn client_gone(e: &zbus::Error) -> bool {
    matches!(
        error_name(e),
        Some(
            "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner"
                | "org.freedesktop.DBus.Error.NoReply"
                | "org.freedesktop.DBus.Error.Disconnected"
        )
    )
}

/// Did the call fail because the connection to the bus itself is gone?
pub(crate) fn connection_lost(e: &zbus::Error) -> bool {
    matches!(e, zbus::Error::InputOutput(_) | zbus::Error::Handshake(_))
        && !matches!(e, zbus::Error::InputOutput(io) if io.kind() == std::io::ErrorKind::TimedOut)
}

/// The imstatus error code of a failed call.
pub(crate) fn code(e: &zbus::Error) -> ErrorCode {
    if client_gone(e) {
        return ErrorCode::ClientNotRunning;
    }
    match e {
        zbus::Error::InputOutput(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            ErrorCode::Timeout
        }
        zbus::Error::InputOutput(_) => ErrorCode::Disconnected,
        zbus::Error::MethodError(name, _, _) => match name.as_str() {
            "org.freedesktop.DBus.Error.AccessDenied" => ErrorCode::AccessDenied,
            "org.freedesktop.DBus.Error.Timeout" | "org.freedesktop.DBus.Error.TimedOut" => {
                ErrorCode::Timeout
            }
            "org.freedesktop.DBus.Error.UnknownMethod" => ErrorCode::Unsupported,
            _ => ErrorCode::ProtocolError,
        },
        _ => ErrorCode::ProtocolError,
    }
}

/// A failed call as a coded error whose detail names the method.
pub(crate) fn coded(method: &str, e: &zbus::Error) -> CodedError {
    CodedError::new(code(e), format!("{method}: {e}"))
}

/// Reads the whole client: owner, active accounts and their state, current saved status
/// (and with `contacts`, every buddy). Two round trips: [`name_owner`] with the account list
/// and the current saved status, then everything about each account with the saved status's
/// type and message (buddies take four more).
pub(crate) async fn query(conn: &Connection, contacts: bool) -> zbus::Result<ClientRead<Sequence>> {
    let (owner, active, current) = tokio::join!(
        name_owner(conn),
        purple::<Vec<i32>, _>(conn, "PurpleAccountsGetAllActive", ()),
        purple_int(conn, "PurpleSavedstatusGetCurrent", ()),
    );
    let (owner, owner_read_at) = owner?;
    let mut read = ClientRead {
        owner,
        owner_read_at,
        accounts: Vec::new(),
        status: None,
        contacts: Vec::new(),
    };
    if read.owner.is_none() {
        return Ok(read);
    }
    // If the client vanished meanwhile, its NameOwnerChanged follows and settles it.
    let handles = match active {
        Ok((handles, _)) => handles,
        Err(e) if client_gone(&e) => return Ok(read),
        Err(e) => return Err(e),
    };
    let accounts = join_all(handles.iter().map(|&a| read_account(conn, a)));
    let status = async {
        match current {
            Ok((saved, at)) => read_saved(conn, saved).await.ok().map(|mut read| {
                read.current_at = Some(at);
                read
            }),
            Err(_) => None,
        }
    };
    let buddies = async {
        if contacts {
            read_contacts(conn, &handles).await
        } else {
            Vec::new()
        }
    };
    let (accounts, status, buddies) = tokio::join!(accounts, status, buddies);
    read.accounts = accounts.into_iter().flatten().collect();
    read.status = status;
    read.contacts = buddies;
    Ok(read)
}

/// Reads one account: username, connection state and connection handle (`None` if the handle
/// died meanwhile).
async fn read_account(conn: &Connection, handle: i32) -> Option<AccountRead<Sequence>> {
    let (username, connected, connecting, gc) = tokio::join!(
        purple_string(conn, "PurpleAccountGetUsername", (handle,)),
        purple_int(conn, "PurpleAccountIsConnected", (handle,)),
        purple_int(conn, "PurpleAccountIsConnecting", (handle,)),
        purple_int(conn, "PurpleAccountGetConnection", (handle,)),
    );
    let (connected, at1) = connected.ok()?;
    let (connecting, at2) = connecting.ok()?;
    let conn_state = if connected != 0 {
        Conn::Connected
    } else if connecting != 0 {
        Conn::Connecting
    } else {
        Conn::Disconnected
    };
    Some(AccountRead {
        handle,
        username: username.ok()?,
        conn: conn_state,
        gc: gc.map_or(0, |(gc, _)| gc),
        read_at: at1.min(at2),
    })
}

/// Reads a saved status's primitive and message. An available one with a `freeforchat`
/// substatus (how `chatty` is set, recipe §4) is `chatty`: that costs three more round trips,
/// only for saved statuses with substatuses.
pub(crate) async fn read_saved(
    conn: &Connection,
    saved: i32,
) -> zbus::Result<StatusRead<Sequence>> {
    let (primitive, message, substatuses) = tokio::join!(
        purple_int(conn, "PurpleSavedstatusGetType", (saved,)),
        purple::<String, _>(conn, "PurpleSavedstatusGetMessage", (saved,)),
        purple_int(conn, "PurpleSavedstatusHasSubstatuses", (saved,)),
    );
    let (primitive, at1) = primitive?;
    let (message, at2) = message?;
    let mut availability = Availability::from_purple_primitive(primitive);
    if availability == Availability::Available
        && substatuses.is_ok_and(|(has, _)| has != 0)
        && chatty(conn, saved).await?
    {
        availability = Availability::Chatty;
    }
    Ok(StatusRead {
        saved,
        status: Status::with_message(availability, message),
        read_at: at1.min(at2),
        current_at: None,
    })
}

/// Does any active account have the `freeforchat` substatus in this saved status?
async fn chatty(conn: &Connection, saved: i32) -> zbus::Result<bool> {
    let (accounts, _) = purple::<Vec<i32>, _>(conn, "PurpleAccountsGetAllActive", ()).await?;
    let subs = join_all(
        accounts
            .iter()
            .map(|&a| purple_int(conn, "PurpleSavedstatusGetSubstatus", (saved, a))),
    )
    .await;
    let types = join_all(
        subs.into_iter()
            .filter_map(Result::ok)
            .filter(|(sub, _)| *sub != 0)
            .map(|(sub, _)| purple_int(conn, "PurpleSavedstatusSubstatusGetType", (sub,))),
    )
    .await;
    let ids = join_all(
        types
            .into_iter()
            .filter_map(Result::ok)
            .map(|(ty, _)| purple_string(conn, "PurpleStatusTypeGetId", (ty,))),
    )
    .await;
    Ok(ids
        .iter()
        .any(|id| id.as_deref().is_ok_and(|id| id == "freeforchat")))
}

/// Reads the current saved status.
pub(crate) async fn read_current(conn: &Connection) -> zbus::Result<StatusRead<Sequence>> {
    let (saved, at) = purple_int(conn, "PurpleSavedstatusGetCurrent", ()).await?;
    let mut read = read_saved(conn, saved).await?;
    read.current_at = Some(at);
    Ok(read)
}

/// Reads a buddy: its account, name and status (offline when not online).
pub(crate) async fn read_buddy(conn: &Connection, buddy: i32) -> zbus::Result<BuddyRead> {
    let (name, account, presence) = tokio::join!(
        purple_string(conn, "PurpleBuddyGetName", (buddy,)),
        purple_int(conn, "PurpleBuddyGetAccount", (buddy,)),
        purple_int(conn, "PurpleBuddyGetPresence", (buddy,)),
    );
    let (name, (account, _), (presence, _)) = (name?, account?, presence?);
    let (online, status) = tokio::join!(
        purple_int(conn, "PurplePresenceIsOnline", (presence,)),
        purple_int(conn, "PurplePresenceGetActiveStatus", (presence,)),
    );
    if online?.0 == 0 {
        return Ok(BuddyRead {
            account,
            name,
            status: Status::OFFLINE,
        });
    }
    let status = status?.0;
    let (ty, message) = tokio::join!(
        purple_int(conn, "PurpleStatusGetType", (status,)),
        purple_string(conn, "PurpleStatusGetAttrString", (status, "message")),
    );
    let (primitive, _) = purple_int(conn, "PurpleStatusTypeGetPrimitive", (ty?.0,)).await?;
    Ok(BuddyRead {
        account,
        name,
        status: Status::with_message(Availability::from_purple_primitive(primitive), message?),
    })
}

/// Reads every buddy of `accounts` (buddies that vanish meanwhile are left out).
async fn read_contacts(conn: &Connection, accounts: &[i32]) -> Vec<BuddyRead> {
    let lists = join_all(
        accounts
            .iter()
            .map(|&a| purple::<Vec<i32>, _>(conn, "PurpleFindBuddies", (a, ""))),
    )
    .await;
    let buddies: Vec<i32> = lists
        .into_iter()
        .filter_map(Result::ok)
        .flat_map(|(list, _)| list)
        .collect();
    join_all(buddies.iter().map(|&b| read_buddy(conn, b)))
        .await
        .into_iter()
        .filter_map(Result::ok)
        .collect()
}

/// Sets the saved status as `purple-remote setstatus` does (recipe §4); `accounts` are the
/// tracked account handles (for the `freeforchat` substatus of `chatty`).
pub(crate) async fn set_status(
    conn: &Connection,
    status: &Status,
    accounts: &[i32],
) -> Result<(), CodedError> {
    let Some(primitive) = status.availability.purple_primitive() else {
        return Err(CodedError::new(
            ErrorCode::Unsupported,
            format!("libpurple has no status `{}`", status.availability),
        ));
    };
    let message = status.message.as_deref().unwrap_or("");
    let int = |method: &'static str, r: zbus::Result<(i32, Sequence)>| {
        r.map(|(v, _)| v).map_err(|e| coded(method, &e))
    };
    let unit =
        |method: &'static str, r: zbus::Result<Message>| r.map(drop).map_err(|e| coded(method, &e));
    let saved = if status.availability == Availability::Chatty {
        let saved = int(
            "PurpleSavedstatusNew",
            purple_int(conn, "PurpleSavedstatusNew", ("", primitive)).await,
        )?;
        for &account in accounts {
            let chat = int(
                "PurpleAccountGetStatus",
                purple_int(conn, "PurpleAccountGetStatus", (account, "freeforchat")).await,
            )?;
            if chat == 0 {
                continue;
            }
            let ty = int(
                "PurpleStatusGetType",
                purple_int(conn, "PurpleStatusGetType", (chat,)).await,
            )?;
            unit(
                "PurpleSavedstatusSetSubstatus",
                raw(
                    conn,
                    "PurpleSavedstatusSetSubstatus",
                    (saved, account, ty, message),
                )
                .await,
            )?;
        }
        unit(
            "PurpleSavedstatusSetMessage",
            raw(conn, "PurpleSavedstatusSetMessage", (saved, message)).await,
        )?;
        saved
    } else {
        let found = int(
            "PurpleSavedstatusFindTransientByTypeAndMessage",
            purple_int(
                conn,
                "PurpleSavedstatusFindTransientByTypeAndMessage",
                (primitive, message),
            )
            .await,
        )?;
        if found != 0 {
            found
        } else {
            let saved = int(
                "PurpleSavedstatusNew",
                purple_int(conn, "PurpleSavedstatusNew", ("", primitive)).await,
            )?;
            if saved == 0 {
                return Err(CodedError::new(
                    ErrorCode::ProtocolError,
                    format!("PurpleSavedstatusNew returned no status for primitive {primitive}"),
                ));
            }
            unit(
                "PurpleSavedstatusSetMessage",
                raw(conn, "PurpleSavedstatusSetMessage", (saved, message)).await,
            )?;
            saved
        }
    };
    unit(
        "PurpleSavedstatusActivate",
        raw(conn, "PurpleSavedstatusActivate", (saved,)).await,
    )
}

/// Calls a libpurple method whose reply carries nothing the caller needs.
async fn raw<B>(conn: &Connection, method: &str, body: B) -> zbus::Result<Message>
where
    B: zbus::export::serde::Serialize + DynamicType,
{
    conn.call_method(
        Some(PURPLE_SERVICE),
        PURPLE_PATH,
        Some(PURPLE_INTERFACE),
        method,
        &body,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_rules_name_each_member_and_only_libpurples_owner_changes() {
        let rules = match_rules(false);
        assert_eq!(
            rules[0],
            "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',\
             member='NameOwnerChanged',arg0='im.pidgin.purple.PurpleService'"
        );
        assert!(rules.contains(
            &"type='signal',sender='im.pidgin.purple.PurpleService',\
              interface='im.pidgin.purple.PurpleInterface',member='AccountSignedOn'"
                .to_owned()
        ));
        assert!(!rules
            .iter()
            .any(|r| r.contains("JabberSendingText") || r.contains("Buddy")));
        assert_eq!(rules.len(), 1 + PURPLE_MEMBERS.len());
        assert_eq!(
            match_rules(true).len(),
            1 + PURPLE_MEMBERS.len() + CONTACT_MEMBERS.len()
        );
        for rule in match_rules(true) {
            zbus::MatchRule::try_from(rule.as_str()).expect("a valid match rule");
        }
    }

    #[test]
    fn bus_descriptions_name_the_address() {
        assert_eq!(
            describe(Some("unix:path=/x")),
            "the D-Bus bus at unix:path=/x"
        );
    }
}
