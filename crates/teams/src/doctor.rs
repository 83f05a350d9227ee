//! `imstatus doctor` for teams-for-linux accounts.
//!
//! MQTT: `broker` (connect, log in, subscribe), `topics` (the retained topics under the prefix,
//! and whether they are the app's), `app` (`connected`, and the presence if any). D-Bus: `bus`,
//! `name` (is the app's name owned, by which process), `state` (`GetState`). The first failure
//! ends the run; later steps are listed as skipped. Each failure's hint names the
//! teams-for-linux setting to turn on, as a `config.json` snippet.

use std::collections::BTreeSet;
use std::time::Duration;

use imstatus_core::{CodedError, ErrorCode};
use imstatus_hub::Check;

use crate::config::{BrokerOptions, BusOptions, TeamsConfig, Via};
use crate::mqtt::{self, Wire};
use crate::names;
use crate::translate::{parse_state, AppState, MqttState, Presence, Topics};

/// How long the broker may take to connect and to send the retained values.
const STEP: Duration = Duration::from_secs(10);
/// How many distinct topic names the doctor lists at most.
const MAX_TOPICS: usize = 32;

/// Checks a teams-for-linux account step by step (see the module docs).
pub async fn doctor(config: &TeamsConfig) -> Vec<Check> {
    match &config.via {
        Via::Mqtt(options) => finish(&["broker", "topics", "app"], mqtt_steps(options).await),
        Via::Dbus(options) => finish(&["bus", "name", "state"], dbus_steps(options).await),
    }
}

/// Lists the steps that did not run as skipped.
fn finish(steps: &[&'static str], mut checks: Vec<Check>) -> Vec<Check> {
    let failed = checks.iter().any(|c| !c.ok);
    while let Some(&step) = steps.get(checks.len()) {
        checks.push(Check {
            name: step,
            ok: false,
            detail: if failed {
                "skipped: an earlier step failed".to_owned()
            } else {
                "skipped".to_owned()
            },
            hint: None,
        });
    }
    checks
}

/// The `config.json` lines that turn the app's MQTT on for this broker.
fn mqtt_snippet(options: &BrokerOptions) -> String {
    let mut fields = vec![
        "\"enabled\": true".to_owned(),
        format!("\"brokerUrl\": \"{}\"", options.describe()),
        format!("\"topicPrefix\": \"{}\"", options.topic_prefix),
    ];
    if let Some(user) = &options.username {
        fields.push(format!("\"username\": \"{user}\", \"password\": \"…\""));
    }
    format!("{{\"mqtt\": {{{}}}}}", fields.join(", "))
}

async fn mqtt_steps(options: &BrokerOptions) -> Vec<Check> {
    let mut checks = Vec::new();
    let topics = Topics::new(options.topic_prefix.clone());
    let failed = |name, failure: mqtt::Failure| {
        let hint = match failure.code {
            ErrorCode::AuthFailed => {
                "check `username` and `password_file` (or `password_command`) against the broker"
            }
            ErrorCode::InvalidCertificate => {
                "trust the broker's CA with `ca_file = \"/path/to/ca.pem\"` (or fix its certificate)"
            }
            ErrorCode::AccessDenied => {
                "let this user read the app's topics in the broker's ACL (`topic read teams/#`)"
            }
            ErrorCode::ServerUnreachable | ErrorCode::DnsFailed | ErrorCode::Timeout => {
                "check `url` and that the broker runs (the same broker as the app's mqtt.brokerUrl)"
            }
            code => code.hint(),
        };
        Check::fail(
            name,
            CodedError::new(failure.code, failure.detail).to_string(),
            hint,
        )
    };
    let mut link = match mqtt::open(options, vec![topics.filter()]).await {
        Ok(link) => link,
        Err(f) => {
            checks.push(failed("broker", f));
            return checks;
        }
    };
    let mut state = MqttState::new(topics.clone());
    let mut seen = BTreeSet::new();
    let mut strangers = BTreeSet::new();
    let mut connected = false;
    let mut deadline = tokio::time::Instant::now() + STEP;
    let mut settle = false;
    loop {
        let wire = match tokio::time::timeout_at(deadline, link.rx.recv()).await {
            Ok(Some(wire)) => wire,
            Err(_) if settle => break,
            Ok(None) | Err(_) => {
                let name = if connected { "topics" } else { "broker" };
                checks.push(failed(
                    name,
                    mqtt::Failure {
                        code: ErrorCode::Timeout,
                        detail: format!("{}: no answer within {STEP:?}", options.describe()),
                        fatal: false,
                    },
                ));
                return checks;
            }
        };
        match wire {
            Wire::Connected => {
                connected = true;
                let who = options
                    .username
                    .as_deref()
                    .map_or("anonymously".to_owned(), |u| format!("as {u}"));
                checks.push(Check::pass(
                    "broker",
                    format!("connected to {} {who}", options.describe()),
                ));
            }
            Wire::Subscribed { app: true, marker } => {
                // Without the marker, the retained values get SETTLE.
                if !marker {
                    deadline = tokio::time::Instant::now() + mqtt::SETTLE;
                    settle = true;
                }
            }
            Wire::Subscribed { app: false, .. } => {
                checks.push(failed(
                    "topics",
                    mqtt::Failure {
                        code: ErrorCode::AccessDenied,
                        detail: format!(
                            "the broker refused the subscription to {}",
                            topics.filter()
                        ),
                        fatal: false,
                    },
                ));
                return checks;
            }
            Wire::Publish {
                topic,
                payload,
                retain,
            } => {
                if seen.len() < MAX_TOPICS {
                    seen.insert(topic.clone());
                }
                if !topics.is_known(&topic) && strangers.len() < MAX_TOPICS {
                    strangers.insert(topic.clone());
                }
                state.handle(&topic, &payload, retain);
            }
            Wire::Barrier => break,
            Wire::Lost(f) => {
                checks.push(failed(if connected { "topics" } else { "broker" }, f));
                return checks;
            }
        }
    }
    let listed = seen.iter().cloned().collect::<Vec<_>>().join(", ");
    if seen.is_empty() {
        checks.push(Check::fail(
            "topics",
            format!(
                "nothing retained under {}: teams-for-linux never published to this broker",
                topics.filter()
            ),
            format!(
                "turn on the app's MQTT in ~/.config/teams-for-linux/config.json: {} and \
                 restart it (or set `topic_prefix` to its mqtt.topicPrefix)",
                mqtt_snippet(options)
            ),
        ));
        return checks;
    }
    if state.connected().is_none() {
        checks.push(Check::fail(
            "topics",
            format!("{listed}; but no {}", topics.topic(names::TOPIC_CONNECTED)),
            "update teams-for-linux to v2.6.19 or newer (it publishes `connected` since then); \
             custom mqtt.statusTopic or mqtt.mediaTopics names are not read",
        ));
        return checks;
    }
    let mut detail = format!("retained: {listed}");
    if !strangers.is_empty() {
        detail.push_str(&format!(
            " (not read: {}; imstatus reads the default mqtt.statusTopic and mqtt.mediaTopics \
             names)",
            strangers.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    checks.push(Check::pass("topics", detail));
    if state.connected() == Some(true) {
        checks.push(Check::pass(
            "app",
            describe_app(state.app(), "connected = true"),
        ));
    } else {
        checks.push(Check::fail(
            "app",
            "teams-for-linux is not running (connected = false: it quit, or the broker published \
             its last will)",
            "start teams-for-linux",
        ));
    }
    checks
}

/// The app's state in words.
fn describe_app(app: &AppState, prefix: &str) -> String {
    let presence = match &app.presence {
        None | Some(Presence::Unknown) => {
            "no presence yet (the login page, or Teams has not shown the presence badge yet)"
                .to_owned()
        }
        Some(Presence::Other(v)) => format!("presence {v:?} (not one imstatus knows)"),
        Some(p) => format!("presence {}", presence_name(p)),
    };
    let on = |b: Option<bool>, yes: &str, no: &str| {
        if b == Some(true) {
            yes.to_owned()
        } else {
            no.to_owned()
        }
    };
    format!(
        "{prefix}; {presence}; {}, {}, {}, {}",
        on(app.in_call, "in a call", "not in a call"),
        on(app.camera, "camera on", "camera off"),
        on(app.microphone, "microphone live", "microphone not live"),
        on(app.screen_sharing, "sharing the screen", "not sharing"),
    )
}

fn presence_name(p: &Presence) -> &'static str {
    match p {
        Presence::Available => "available",
        Presence::Busy => "busy",
        Presence::DoNotDisturb => "do_not_disturb",
        Presence::Away => "away",
        Presence::BeRightBack => "be_right_back",
        Presence::Unknown | Presence::Other(_) => "unknown",
    }
}

const DBUS_SNIPPET: &str = "{\"dbusControl\": {\"enabled\": true}}";

async fn dbus_steps(options: &BusOptions) -> Vec<Check> {
    let mut checks = Vec::new();
    let bus = options.bus.as_deref();
    let conn = match crate::dbus::connect(bus).await {
        Ok(conn) => conn,
        Err(detail) => {
            checks.push(Check::fail(
                "bus",
                CodedError::new(ErrorCode::ClientNotRunning, detail).to_string(),
                "run imstatus in the desktop session of the user running teams-for-linux, or \
                 set `bus` to that session bus's address",
            ));
            return checks;
        }
    };
    checks.push(Check::pass(
        "bus",
        format!("connected to {}", crate::dbus::describe(bus)),
    ));
    let owner = match crate::dbus::name_owner(&conn).await {
        Ok((Some(owner), _)) => owner,
        Ok((None, _)) => {
            checks.push(Check::fail(
                "name",
                format!(
                    "{} has no owner: teams-for-linux is not running, or runs without its D-Bus \
                     API",
                    names::DBUS_NAME
                ),
                format!(
                    "start teams-for-linux with {DBUS_SNIPPET} in \
                     ~/.config/teams-for-linux/config.json; the D-Bus API is in no release up to \
                     v2.17.1 (use via = \"mqtt\" with those), and a Snap may not be allowed to \
                     own the name"
                ),
            ));
            return checks;
        }
        Err(e) => {
            checks.push(Check::fail(
                "name",
                format!("GetNameOwner: {e}"),
                ErrorCode::ProtocolError.hint(),
            ));
            return checks;
        }
    };
    let pid = crate::dbus::owner_pid(&conn, &owner)
        .await
        .map_or(String::new(), |p| format!(", pid {p}"));
    checks.push(Check::pass(
        "name",
        format!("{} is owned by {owner}{pid}", names::DBUS_NAME),
    ));
    match crate::dbus::get_state(&conn, &owner).await {
        Ok((json, _)) => match parse_state(&json) {
            Ok(state) => checks.push(Check::pass("state", describe_app(&state, "GetState"))),
            Err(why) => checks.push(Check::fail(
                "state",
                why,
                "the app's D-Bus API is not the one imstatus knows (it is not released yet and \
                 may change: see docs/teams-for-linux.md)",
            )),
        },
        Err(e) => checks.push(Check::fail(
            "state",
            CodedError::new(crate::dbus::code(&e), crate::dbus::get_state_failure(&e)).to_string(),
            "the owner of the name does not answer GetState as teams-for-linux's control API \
             does (see docs/teams-for-linux.md)",
        )),
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mqtt_snippet_names_the_broker_and_prefix() {
        let mut o = BrokerOptions::new("mqtt://127.0.0.1:1884").expect("valid");
        o.topic_prefix = "home/teams".into();
        assert_eq!(
            mqtt_snippet(&o),
            "{\"mqtt\": {\"enabled\": true, \"brokerUrl\": \"mqtt://127.0.0.1:1884\", \
             \"topicPrefix\": \"home/teams\"}}"
        );
        serde_json::from_str::<serde_json::Value>(&mqtt_snippet(&o)).expect("valid JSON");
        serde_json::from_str::<serde_json::Value>(DBUS_SNIPPET).expect("valid JSON");
    }

    #[test]
    fn skipped_steps_are_listed() {
        let checks = finish(&["a", "b"], vec![Check::fail("a", "x", "y")]);
        assert_eq!(checks.len(), 2);
        assert_eq!(checks[1].detail, "skipped: an earlier step failed");
    }
}
