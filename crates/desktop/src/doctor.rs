//! `imstatus doctor` for a desktop account: for each enabled signal, which backends answered
//! and why the others did not.

use std::collections::BTreeSet;
use std::path::Path;

use imstatus_hub::Check;

use crate::camera::{holders, Pattern};
use crate::config::{DesktopConfig, IdleBackend};
use crate::error::Error;
use crate::idle::{Logind, Mutter, ScreenSaver, X11};
use crate::lock::LockWatch;
use crate::microphone::Pulse;

/// What to do about a backend that does not answer.
fn hint(e: &Error) -> String {
    match e {
        Error::NotRunning(_) => {
            "start it, or point the account at it (`pulse_server`, `display`, `session_bus`, `system_bus`)".into()
        }
        Error::Denied(_) => "check permissions (socket mode, bus policy, PulseAudio cookie)".into(),
        Error::Unsupported(_) => "this desktop does not offer it; another backend may".into(),
        _ => e.code().hint().into(),
    }
}

/// Checks each enabled signal's backends in order.
pub(crate) async fn doctor(config: &DesktopConfig) -> Vec<Check> {
    let mut checks = Vec::new();
    if config.microphone {
        checks.push(match Pulse::connect(config).await {
            Ok(p) => Check::pass("microphone", format!("{} ({}) answers", p.server, p.name)),
            Err(e) => Check::fail("microphone", e.to_string(), hint(&e)),
        });
    }
    if config.camera {
        let mut devices = BTreeSet::new();
        let mut missing = Vec::new();
        for pattern in &config.camera_devices {
            let p = Pattern::new(pattern);
            let found = p.expand_paths();
            if found.is_empty() {
                missing.push(pattern.clone());
            }
            devices.extend(found);
        }
        let names: Vec<String> = devices.iter().map(|d| d.display().to_string()).collect();
        checks.push(if devices.is_empty() {
            Check::fail(
                "camera",
                format!("no device matches {}", missing.join(", ")),
                "plug in a camera (new devices are picked up while running), or fix `camera_devices`",
            )
        } else {
            let users = holders(Path::new("/proc"), &devices);
            let users: Vec<String> = users
                .iter()
                .map(|a| format!("{} ({})", a.name, a.pid.map_or("?".into(), |p| p.to_string())))
                .collect();
            Check::pass(
                "camera",
                format!(
                    "watching {}; in use by: {}",
                    names.join(", "),
                    if users.is_empty() { "nobody".into() } else { users.join(", ") }
                ),
            )
        });
    }
    if config.idle {
        let mut chosen = None;
        for backend in &config.idle_backends {
            let answer = match backend {
                IdleBackend::Mutter => Mutter::open(config)
                    .await
                    .map(|_| "GetIdletime answers".to_owned()),
                IdleBackend::ScreenSaver => ScreenSaver::open(config).await.map(|_| {
                    "GetSessionIdleTime answers (polled every 200 ms while idle)".to_owned()
                }),
                IdleBackend::X11 => X11::open(config).await.and_then(|x| {
                    let idle = x.query()?;
                    Ok(format!("{}: idle for {} s", x.detail(), idle.as_secs()))
                }),
                IdleBackend::Logind => Logind::open(config)
                    .await
                    .map(|_| "IdleHint answers".to_owned()),
            };
            let name = backend.as_str();
            match (answer, chosen) {
                (Ok(detail), None) => {
                    chosen = Some(name);
                    checks.push(Check::pass("idle", format!("{name}: {detail} (used)")));
                }
                (Ok(detail), Some(used)) => checks.push(Check::pass(
                    "idle",
                    format!("{name}: {detail} (not used: {used} comes first)"),
                )),
                (Err(e), _) => checks.push(Check::fail("idle", format!("{name}: {e}"), hint(&e))),
            }
        }
        if let Some(used) = chosen {
            // A backend that did not answer is fine when another one did.
            for c in &mut checks {
                if c.name == "idle" && !c.ok {
                    c.ok = true;
                    c.detail = format!("{} (skipped: {used} answers)", c.detail);
                    c.hint = None;
                }
            }
        }
    }
    if config.lock {
        let mut any = false;
        let mut lock_checks = Vec::new();
        for backend in &config.lock_backends {
            match LockWatch::open(*backend, config).await {
                Ok(w) => {
                    any = true;
                    lock_checks.push(Check::pass(
                        "lock",
                        format!("{}: {} answers", backend.as_str(), w.detail),
                    ));
                }
                Err(e) => lock_checks.push(Check::fail(
                    "lock",
                    format!("{}: {e}", backend.as_str()),
                    hint(&e),
                )),
            }
        }
        if any {
            for c in &mut lock_checks {
                if !c.ok {
                    c.ok = true;
                    c.detail = format!("{} (another lock backend answers)", c.detail);
                    c.hint = None;
                }
            }
        }
        checks.extend(lock_checks);
    }
    checks
}
