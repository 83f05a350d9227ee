//! Human and JSON output. Human output is short and aligned; JSON is the documented schema
//! (docs/events.md), one object per line.

use imstatus_core::{
    CodedError, Event, EventKind, Resource, Session, SignInResult, Snapshot, Status,
};

/// One event as a JSON line (without the newline).
pub fn json(event: &Event) -> String {
    // Serialising our own types to a string cannot fail (no maps with non-string keys).
    serde_json::to_string(event).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// `away "lunch"`, or just `available`.
pub fn status_text(status: &Status) -> String {
    match &status.message {
        Some(m) => format!("{} {:?}", status.availability, m),
        None => status.availability.to_string(),
    }
}

fn clock(event: &Event) -> String {
    let t = event.time.to_string();
    t.get(11..23).unwrap_or(&t).to_owned()
}

/// `signed_in away "lunch" (priority 5)`; a part that is not signed in shows only its session.
fn resource_text(r: &Resource) -> String {
    let mut s = r.session.to_string();
    if matches!(r.session, Session::SignedIn | Session::SigningOut) {
        s.push(' ');
        s.push_str(&status_text(&r.status()));
    }
    if let Some(p) = r.priority {
        s.push_str(&format!(" (priority {p})"));
    }
    s
}

fn snapshot_text(s: &Snapshot) -> String {
    format!(
        "client {}, {}, {} (mistatus 0x{:03X})",
        s.client,
        s.session,
        status_text(&s.status()),
        s.mistatus
    )
}

/// One event as a human line: `10:00:00.123  alice  signed in`.
pub fn event_line(event: &Event, contacts: bool) -> String {
    let what = match &event.kind {
        EventKind::Snapshot { snapshot, resync } => {
            let mut s = format!(
                "{}{}",
                if *resync { "resync: " } else { "" },
                snapshot_text(snapshot)
            );
            for r in &snapshot.resources {
                s.push_str(&format!(
                    "\n{:14}resource {}: {}",
                    "",
                    r.resource,
                    resource_text(r)
                ));
            }
            if let Some(line) = person_text(snapshot) {
                s.push_str(&format!("\n{:14}{line}", ""));
            }
            if contacts {
                for c in &snapshot.contacts {
                    s.push_str(&format!(
                        "\n{:14}contact {}: {}",
                        "",
                        c.contact,
                        status_text(&c.status())
                    ));
                }
            }
            s
        }
        EventKind::ClientStarting => "client starting".into(),
        EventKind::ClientStarted => "client started".into(),
        EventKind::SigningIn => "signing in".into(),
        EventKind::SignedIn {
            result: SignInResult::Ok,
        } => "signed in".into(),
        EventKind::SignedIn {
            result: SignInResult::Failed(code),
        } => format!("sign-in failed: {code} (0x{:08X})", code.hresult()),
        EventKind::StatusChanged {
            from,
            to,
            decided_by,
            ..
        } => match decided_by {
            Some(d) => format!(
                "status {} -> {} (decided by {d})",
                status_text(from),
                status_text(to)
            ),
            None => format!("status {} -> {}", status_text(from), status_text(to)),
        },
        EventKind::ResourceChanged { resource, to, .. } => match to {
            Some(r) => format!("resource {resource}: {}", resource_text(r)),
            None => format!("resource {resource}: gone"),
        },
        EventKind::SigningOut => "signing out".into(),
        EventKind::SignedOut { reason } => format!(
            "signed out ({})",
            serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        ),
        EventKind::ClientShutdown => "client shut down".into(),
        EventKind::ContactStatusChanged { contact, from, to } => format!(
            "contact {contact}: {} -> {}",
            status_text(from),
            status_text(to)
        ),
        EventKind::SourceError {
            code,
            detail,
            session_unknown,
        } => {
            let err = CodedError::new(*code, detail.clone());
            if *session_unknown {
                format!("error: {err} (session unknown until the source recovers)")
            } else {
                format!("error: {err}")
            }
        }
        other => other.name().to_owned(),
    };
    format!("{}  {:<10} {}", clock(event), event.account, what)
}

/// The `status` table: one aligned row per account.
pub fn status_table(rows: &[(&Event, Option<&CodedError>)]) -> String {
    let width = rows
        .iter()
        .map(|(e, _)| e.account.as_str().len())
        .max()
        .unwrap_or(0)
        .max(7);
    let mut out = String::new();
    for (event, error) in rows {
        let Some(s) = event.snapshot() else { continue };
        let answer = match error {
            Some(e) => format!("{} (0x{:08X})", e.code, e.code.hresult()),
            None => format!("{:<11} {}", s.session, status_text(&s.status())),
        };
        out.push_str(&format!(
            "{:<width$}  {:<7} client {:<11} {}\n",
            event.account.as_str(),
            event.source,
            s.client,
            answer,
        ));
        for r in &s.resources {
            out.push_str(&format!(
                "{:<width$}    {} {}\n",
                "",
                r.resource,
                resource_text(r)
            ));
        }
        if let Some(line) = person_text(s) {
            out.push_str(&format!("{:<width$}    {line}\n", ""));
        }
    }
    out
}

/// A person's members and what decided its status: `accounts desktop, alice; decided by call
/// (desk: microphone)`.
fn person_text(s: &Snapshot) -> Option<String> {
    if s.accounts.is_empty() {
        return None;
    }
    let accounts: Vec<&str> = s.accounts.iter().map(|a| a.as_str()).collect();
    let mut text = format!("accounts {}", accounts.join(", "));
    if let Some(d) = &s.decided_by {
        text.push_str(&format!("; decided by {d}"));
    }
    Some(text)
}
