//! Human and JSON output. Human output is short and aligned; JSON is the documented schema
//! (docs/events.md), one object per line.

use imstatus_core::{
    Activity, App, CodedError, Event, EventKind, Resource, Session, SignInResult, Snapshot, Status,
};

/// The longest application name shown, in characters (a sound-server client names itself).
const APP_NAME_MAX: usize = 40;

/// One event as a JSON line (without the newline).
pub fn json(event: &Event) -> String {
    // Serialising our own types to a string cannot fail (no maps with non-string keys).
    serde_json::to_string(event).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// One event as a JSON line with its newline, appended to `out` (no intermediate string).
pub fn json_line(event: &Event, out: &mut Vec<u8>) {
    let start = out.len();
    // Serialising our own types cannot fail (no maps with non-string keys); say so if it did.
    if let Err(e) = serde_json::to_writer(&mut *out, event) {
        out.truncate(start);
        out.extend_from_slice(format!("{{\"error\":\"{e}\"}}").as_bytes());
    }
    out.push(b'\n');
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

/// An application's name as shown: control characters escaped (a client of the sound server
/// chooses its own name, which must not break the line or drive the terminal), at most
/// [`APP_NAME_MAX`] characters.
fn app_name(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if i == APP_NAME_MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `parecord 1234, firefox 88` (an app without a PID is just its name).
fn apps_text(apps: &[App]) -> String {
    apps.iter()
        .map(|a| match a.pid {
            Some(pid) => format!("{} {pid}", app_name(&a.name)),
            None => app_name(&a.name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `on (parecord 1234)`, `on` (apps unknown) or `off`.
fn device_text(on: bool, apps: &[App]) -> String {
    match (on, apps.is_empty()) {
        (false, _) => "off".into(),
        (true, true) => "on".into(),
        (true, false) => format!("on ({})", apps_text(apps)),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// The whole activity on one line:
/// `mic on (parecord 1234) camera off in_call yes idle no (12s) locked no`, with
/// `screen_sharing yes` after `in_call` while a call client says the screen is shared.
pub fn activity_text(a: &Activity) -> String {
    let idle = match a.idle_s {
        Some(s) => format!("{} ({s}s)", yes_no(a.idle)),
        None => yes_no(a.idle).to_owned(),
    };
    format!(
        "mic {} camera {} in_call {}{} idle {idle} locked {}",
        device_text(a.microphone, &a.microphone_apps),
        device_text(a.camera, &a.camera_apps),
        yes_no(a.in_call),
        if a.screen_sharing {
            " screen_sharing yes"
        } else {
            ""
        },
        yes_no(a.locked),
    )
}

/// Whether `in_call` is just `microphone || camera` (not a call client's own word).
fn call_from_devices(a: &Activity) -> bool {
    a.in_call == (a.microphone || a.camera)
}

/// What an `activity_changed` says, as what changed: `microphone on (zoom 4242)`,
/// `idle (300s)`, `unlocked`, several joined by `, `; the whole activity the first time.
pub fn activity_change_text(from: Option<&Activity>, to: &Activity) -> String {
    let Some(from) = from else {
        return format!("activity: {}", activity_text(to));
    };
    let mut changes = Vec::new();
    if from.microphone != to.microphone || from.microphone_apps != to.microphone_apps {
        changes.push(format!(
            "microphone {}",
            device_text(to.microphone, &to.microphone_apps)
        ));
    }
    if from.camera != to.camera || from.camera_apps != to.camera_apps {
        changes.push(format!(
            "camera {}",
            device_text(to.camera, &to.camera_apps)
        ));
    }
    // A call client's own `in_call` (a call with the microphone muted and the camera off); one
    // that follows the devices is said by their lines already.
    if from.in_call != to.in_call && !(call_from_devices(from) && call_from_devices(to)) {
        changes.push(
            if to.in_call {
                "in a call"
            } else {
                "call ended"
            }
            .into(),
        );
    }
    if from.screen_sharing != to.screen_sharing {
        changes.push(
            if to.screen_sharing {
                "screen sharing"
            } else {
                "screen sharing ended"
            }
            .into(),
        );
    }
    if from.idle != to.idle {
        changes.push(match (to.idle, to.idle_s) {
            (true, Some(s)) => format!("idle ({s}s)"),
            (true, None) => "idle".into(),
            (false, _) => "not idle".into(),
        });
    }
    if from.idle_s.is_some() != to.idle_s.is_some() {
        changes.push(match to.idle_s {
            Some(s) => format!("idle time known ({s}s)"),
            None => "idle time unknown".into(),
        });
    }
    if from.locked != to.locked {
        changes.push(if to.locked { "locked" } else { "unlocked" }.into());
    }
    if changes.is_empty() {
        // Only what is derived (`in_call`) changed, which the core never does alone.
        return format!("activity: {}", activity_text(to));
    }
    changes.join(", ")
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
            if let Some(a) = &snapshot.activity {
                s.push_str(&format!("\n{:14}activity: {}", "", activity_text(a)));
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
        EventKind::ActivityChanged { from, to } => activity_change_text(from.as_deref(), to),
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
        if let Some(a) = &s.activity {
            out.push_str(&format!(
                "{:<width$}    activity {}\n",
                "",
                activity_text(a)
            ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use imstatus_core::{AccountId, Client, SourceKind, Timestamp};

    /// 2026-11-25T09:34:23.728Z.
    const T: Timestamp = Timestamp::from_millis(1_795_599_263_728);

    fn event(kind: EventKind) -> Event {
        Event {
            seq: 7,
            time: T,
            account: AccountId::new("desk"),
            source: SourceKind::new_static("desktop"),
            kind,
        }
    }

    fn desk(activity: Activity) -> Snapshot {
        let mut s = Snapshot::unknown();
        s.client = Client::Running;
        s.activity = Some(activity);
        s
    }

    fn on_call() -> Activity {
        Activity {
            microphone: true,
            in_call: true,
            idle_s: Some(312),
            idle: true,
            microphone_apps: vec![App::new("parecord", Some(1234)), App::new("zoom", None)],
            ..Activity::default()
        }
    }

    fn changed(from: Option<Activity>, to: Activity) -> String {
        event_line(
            &event(EventKind::ActivityChanged {
                from: from.map(Box::new),
                to: Box::new(to),
            }),
            false,
        )
    }

    #[test]
    fn the_whole_activity_is_one_short_line() {
        assert_eq!(
            activity_text(&on_call()),
            "mic on (parecord 1234, zoom) camera off in_call yes idle yes (312s) locked no"
        );
        let quiet = Activity {
            locked: true,
            camera: true,
            camera_apps: vec![App::new("cheese", Some(88))],
            in_call: true,
            ..Activity::default()
        };
        assert_eq!(
            activity_text(&quiet),
            "mic off camera on (cheese 88) in_call yes idle no locked yes"
        );
    }

    #[test]
    fn status_shows_the_activity_under_its_account_and_other_accounts_unchanged() {
        let desk = event(EventKind::Snapshot {
            snapshot: Box::new(desk(on_call())),
            resync: false,
        });
        let mut purple = event(EventKind::Snapshot {
            snapshot: Box::new(Snapshot::unknown()),
            resync: false,
        });
        purple.account = AccountId::new("purple");
        purple.source = SourceKind::new_static("purple");
        assert_eq!(
            status_table(&[(&desk, None), (&purple, None)]),
            "desk     desktop client running     unknown     unknown\n\
             \x20          activity mic on (parecord 1234, zoom) camera off in_call yes idle yes (312s) locked no\n\
             purple   purple  client unknown     unknown     unknown\n"
        );
    }

    #[test]
    fn a_watched_snapshot_has_an_activity_line() {
        let line = event_line(
            &event(EventKind::Snapshot {
                snapshot: Box::new(desk(Activity::default())),
                resync: false,
            }),
            false,
        );
        assert_eq!(
            line,
            "09:34:23.728  desk       client running, unknown, unknown (mistatus 0x000)\n\
             \x20             activity: mic off camera off in_call no idle no locked no"
        );
    }

    #[test]
    fn a_call_clients_own_call_and_screen_sharing_are_shown() {
        let idle = Activity::default();
        let call = Activity {
            in_call: true,
            ..Activity::default()
        };
        let sharing = Activity {
            screen_sharing: true,
            ..call.clone()
        };
        assert_eq!(
            activity_text(&sharing),
            "mic off camera off in_call yes screen_sharing yes idle no locked no"
        );
        let what = |from: &Activity, to: &Activity| activity_change_text(Some(from), to);
        // In a call with the microphone muted: only the client can say so.
        assert_eq!(what(&idle, &call), "in a call");
        assert_eq!(what(&call, &sharing), "screen sharing");
        assert_eq!(what(&sharing, &idle), "call ended, screen sharing ended");
        // The microphone goes live in that call: the call was news already.
        let live = Activity {
            microphone: true,
            microphone_apps: vec![App::new("Teams for Linux", None)],
            ..call.clone()
        };
        assert_eq!(what(&call, &live), "microphone on (Teams for Linux)");
        // Joining with the microphone live: the device line says it.
        assert_eq!(what(&idle, &live), "microphone on (Teams for Linux)");
    }

    #[test]
    fn activity_changed_says_what_changed() {
        let idle = Activity {
            idle_s: Some(4),
            ..Activity::default()
        };
        // The first report has nothing to compare with: all of it.
        assert_eq!(
            changed(None, idle.clone()),
            "09:34:23.728  desk       activity: mic off camera off in_call no idle no (4s) locked no"
        );
        let mic = Activity {
            microphone: true,
            in_call: true,
            microphone_apps: vec![App::new("zoom", Some(4242))],
            ..idle.clone()
        };
        let what = |from: &Activity, to: &Activity| activity_change_text(Some(from), to);
        assert_eq!(what(&idle, &mic), "microphone on (zoom 4242)");
        assert_eq!(what(&mic, &idle), "microphone off");
        // Another app joins: still on, with both.
        let two = Activity {
            microphone_apps: vec![App::new("firefox", None), App::new("zoom", Some(4242))],
            ..mic.clone()
        };
        assert_eq!(what(&mic, &two), "microphone on (firefox, zoom 4242)");
        let cam = Activity {
            camera: true,
            in_call: true,
            camera_apps: vec![App::new("cheese", Some(9))],
            ..idle.clone()
        };
        assert_eq!(what(&idle, &cam), "camera on (cheese 9)");
        assert_eq!(what(&cam, &idle), "camera off");
        let away = Activity {
            idle: true,
            idle_s: Some(300),
            ..idle.clone()
        };
        assert_eq!(what(&idle, &away), "idle (300s)");
        assert_eq!(what(&away, &idle), "not idle");
        let locked = Activity {
            locked: true,
            ..away.clone()
        };
        assert_eq!(what(&away, &locked), "locked");
        assert_eq!(what(&locked, &idle), "not idle, unlocked");
        // The idle backend goes away and comes back.
        assert_eq!(what(&idle, &Activity::default()), "idle time unknown");
        assert_eq!(what(&Activity::default(), &idle), "idle time known (4s)");
        // Several at once, in a fixed order.
        assert_eq!(
            what(
                &idle,
                &Activity {
                    locked: true,
                    ..mic.clone()
                }
            ),
            "microphone on (zoom 4242), locked"
        );
        assert_eq!(
            changed(Some(idle), mic),
            "09:34:23.728  desk       microphone on (zoom 4242)"
        );
    }

    #[test]
    fn an_app_name_cannot_break_the_line_or_run_on() {
        let evil = Activity {
            microphone: true,
            in_call: true,
            microphone_apps: vec![App::new("a\nb\x1b[31m", Some(1))],
            ..Activity::default()
        };
        let text = activity_change_text(Some(&Activity::default()), &evil);
        assert_eq!(text, "microphone on (a\\nb\\u{1b}[31m 1)");
        let long = "x".repeat(500);
        let text = apps_text(&[App::new(long, None)]);
        assert_eq!(text, format!("{}…", "x".repeat(APP_NAME_MAX)));
    }
}
