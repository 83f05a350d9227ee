//! `imstatus doctor` for a purple account: bus, client, accounts, connections, step by step.

use crate::config::PurpleConfig;
use futures_util::future::join_all;
use imstatus_core::ErrorCode;
use imstatus_hub::Check;

use crate::bus;
use crate::signal::PURPLE_SERVICE;
use crate::translate::wanted;

/// Checks a purple account step by step: the bus is reachable, a client owns libpurple's
/// name, its accounts (username, protocol) and the connection state of each. Stops at the
/// first step that makes the next ones meaningless.
pub async fn doctor(config: &PurpleConfig) -> Vec<Check> {
    let mut checks = Vec::new();
    let where_ = bus::describe(config.bus.as_deref());
    let conn = match bus::connect(config.bus.as_deref()).await {
        Ok(conn) => conn,
        Err(e) => {
            checks.push(Check::fail(
                "bus",
                e.to_string(),
                "start a D-Bus session bus, or set `bus` in the config to the address the client uses",
            ));
            return checks;
        }
    };
    let me = conn
        .unique_name()
        .map_or_else(String::new, |n| format!(" as {n}"));
    checks.push(Check::pass("bus", format!("connected to {where_}{me}")));

    match bus::name_owner(&conn).await {
        Ok((Some(owner), _)) => {
            let version = bus::purple_string(&conn, "PurpleCoreGetVersion", ())
                .await
                .map_or_else(
                    |e| format!("version unknown: {e}"),
                    |v| format!("libpurple {v}"),
                );
            checks.push(Check::pass(
                "client",
                format!("{PURPLE_SERVICE} is owned by {owner} ({version})"),
            ));
        }
        Ok((None, _)) => {
            checks.push(Check::fail(
                "client",
                format!("nobody owns {PURPLE_SERVICE} on {where_}"),
                ErrorCode::ClientNotRunning.hint(),
            ));
            return checks;
        }
        Err(e) => {
            checks.push(Check::fail(
                "client",
                format!("GetNameOwner: {e}"),
                bus::code(&e).hint(),
            ));
            return checks;
        }
    }

    let handles = match bus::purple::<Vec<i32>, _>(&conn, "PurpleAccountsGetAllActive", ()).await {
        Ok((handles, _)) => handles,
        Err(e) => {
            checks.push(Check::fail(
                "accounts",
                format!("PurpleAccountsGetAllActive: {e}"),
                "the client does not answer libpurple's D-Bus API; is it built with D-Bus support?",
            ));
            return checks;
        }
    };
    let details = join_all(handles.iter().map(|&a| {
        let conn = &conn;
        async move {
            let (name, protocol, connected, connecting) = tokio::join!(
                bus::purple_string(conn, "PurpleAccountGetUsername", (a,)),
                bus::purple_string(conn, "PurpleAccountGetProtocolId", (a,)),
                bus::purple_int(conn, "PurpleAccountIsConnected", (a,)),
                bus::purple_int(conn, "PurpleAccountIsConnecting", (a,)),
            );
            (
                name.unwrap_or_else(|e| format!("account {a} ({e})")),
                protocol.unwrap_or_else(|_| "unknown protocol".into()),
                connected.is_ok_and(|(c, _)| c != 0),
                connecting.is_ok_and(|(c, _)| c != 0),
            )
        }
    }))
    .await;
    let listed: Vec<String> = details
        .iter()
        .map(|(name, protocol, _, _)| format!("{name} ({protocol})"))
        .collect();
    let tracked: Vec<_> = details
        .iter()
        .filter(|(name, ..)| wanted(&config.accounts, name))
        .collect();
    if handles.is_empty() {
        checks.push(Check::fail(
            "accounts",
            "the client has no enabled accounts",
            "add or enable an account in Pidgin or Finch",
        ));
        return checks;
    }
    if tracked.is_empty() {
        checks.push(Check::fail(
            "accounts",
            format!(
                "none of the client's accounts ({}) matches `accounts` = {:?}",
                listed.join(", "),
                config.accounts
            ),
            "fix `accounts` in the config: full `user@host/resource` or bare `user@host`",
        ));
        return checks;
    }
    checks.push(Check::pass("accounts", listed.join(", ")));
    for (name, _, connected, connecting) in tracked {
        checks.push(if *connected {
            Check::pass("connection", format!("{name}: signed in"))
        } else if *connecting {
            Check::fail(
                "connection",
                format!("{name}: still signing in"),
                "if it stays like this, look for a dialog in the client (an untrusted certificate?)",
            )
        } else {
            Check::fail(
                "connection",
                format!("{name}: signed out"),
                "sign in from the client (or `imstatus set available`); a wrong password disables the account",
            )
        });
    }
    checks
}
