//! `imstatus doctor` for XMPP accounts: DNS, TCP, TLS, SASL, roster, (in contact mode) the
//! subscription, and visibility, one check each.
//!
//! The steps are the source's own login steps, run one by one with a deadline each; the first
//! failure ends the run and the later steps are listed as skipped, so the user sees exactly
//! where it broke and what to do about it. The doctor never sends presence: it asks the server
//! what it could do to hide the session, but does not go online.

use std::future::Future;
use std::time::Duration;

use crate::config::{TlsMode, Visibility, WatchAs, XmppConfig};
use imstatus_core::{CodedError, ErrorCode};
use imstatus_hub::Check;
use tokio_xmpp::xmlstream::XmppStreamElement;
use xmpp_parsers::disco::DiscoInfoQuery;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::minidom::Element;
use xmpp_parsers::roster::Roster;
use xmpp_parsers::stanza::Stanza;

use crate::connect::{self, Next};
use crate::error::Error;
use crate::source::{answers, load_roots, random_u64, LOGIN_TIMEOUT};
use crate::subscription::{self, Subscription};
use crate::translate::RESOURCE_PREFIX;
use crate::visibility::{self, Plan};

/// The checks of an account, in order.
fn steps(config: &XmppConfig) -> Vec<&'static str> {
    let mut steps = vec!["dns", "tcp", "tls", "sasl", "roster"];
    if matches!(config.watch_as, WatchAs::Contact { .. }) {
        steps.push("subscription");
    }
    steps.push("visibility");
    steps
}

/// Checks an XMPP account step by step: `dns`, `tcp`, `tls`, `sasl`, `roster`, in contact mode
/// `subscription`, and `visibility` (after the first failure the rest say they were skipped).
pub async fn doctor(config: &XmppConfig) -> Vec<Check> {
    let steps = steps(config);
    let mut checks = Vec::with_capacity(steps.len());
    // Every step returns its success detail; the first failure stops the run.
    if let Err(failure) = run(config, &mut checks).await {
        let step = steps.get(checks.len()).copied().unwrap_or("visibility");
        checks.push(failed(step, &failure));
    }
    while let Some(&step) = steps.get(checks.len()) {
        checks.push(Check {
            name: step,
            ok: false,
            detail: "skipped: an earlier step failed".to_owned(),
            hint: None,
        });
    }
    checks
}

fn passed(name: &'static str, detail: String) -> Check {
    Check {
        name,
        ok: true,
        detail,
        hint: None,
    }
}

fn failed(name: &'static str, failure: &Error) -> Check {
    let hint = match (name, failure.code()) {
        ("tls", ErrorCode::InvalidCertificate) => {
            "trust the server's CA with `ca_file = \"/path/to/ca.pem\"` (or fix the server's certificate)"
        }
        ("sasl", ErrorCode::AuthFailed) => {
            "check `jid` (or `watcher_jid`) and the password in its `…password_file` / `…password_command`"
        }
        ("roster", _) => "the login works but the session does not; check the server's log",
        ("subscription", _) => {
            "the user must approve the watcher's presence subscription in their client; \
             `imstatus watch` asks for one if there is none"
        }
        ("visibility", ErrorCode::Unsupported) => {
            "enable privacy lists on the server (Prosody: mod_privacy_lists; ejabberd: \
             mod_privacy), or accept being seen with visibility = \"auto\" or \"visible\""
        }
        (_, code) => code.hint(),
    };
    Check {
        name,
        ok: false,
        detail: CodedError::new(failure.code(), failure.detail().to_owned()).to_string(),
        hint: Some(hint.to_owned()),
    }
}

/// Runs `step` with the login deadline.
async fn timed<T>(what: &str, step: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    tokio::time::timeout(LOGIN_TIMEOUT, step)
        .await
        .unwrap_or_else(|_| {
            Err(Error::retry(
                ErrorCode::Timeout,
                format!("{what} did not finish within {LOGIN_TIMEOUT:?}"),
            ))
        })
}

fn bare(what: &str, jid: &str) -> Result<BareJid, Error> {
    BareJid::new(jid)
        .ok()
        .filter(|j| j.node().is_some())
        .ok_or_else(|| {
            Error::retry(
                ErrorCode::DnsFailed,
                format!("{what} {jid:?} is not a bare JID like user@example.org"),
            )
        })
}

async fn run(config: &XmppConfig, checks: &mut Vec<Check>) -> Result<(), Error> {
    let user = bare("jid", &config.jid)?;
    let login = bare("the login JID", config.login_jid())?;
    let domain = login.domain().as_str();

    let resolved = timed(
        "the DNS lookup",
        connect::resolve(domain, config.server.as_deref()),
    )
    .await?;
    checks.push(passed("dns", resolved.how.clone()));
    connect::check_plaintext(config.tls, &resolved.addrs)?;

    let tcp = timed("the TCP connect", connect::tcp(&resolved.addrs)).await?;
    let peer = tcp
        .peer_addr()
        .map_or_else(|_| "the server".to_owned(), |a| a.to_string());
    checks.push(passed("tcp", format!("connected to {peer}")));

    let roots = match config.tls {
        TlsMode::Required => {
            Some(timed("loading trust roots", load_roots(config.ca_file.clone())).await?)
        }
        TlsMode::InsecurePlaintext => None,
    };
    let (features, stream, info) = timed(
        "STARTTLS",
        connect::open(tcp, domain, config.tls, roots.as_ref()),
    )
    .await?;
    checks.push(match (&roots, info.session.clone()) {
        (Some(roots), Some(session)) => passed(
            "tls",
            format!(
                "STARTTLS {session}; certificate {}; trusted via {}",
                info.certificate.as_deref().unwrap_or("(not seen)"),
                roots.description
            ),
        ),
        _ => Check {
            name: "tls",
            ok: true,
            detail: "not used: tls = \"insecure-plaintext\" (the password crosses the network in the clear)"
                .to_owned(),
            hint: Some("use tls = \"required\" for anything but a loopback test server".to_owned()),
        },
    });

    let password = config.password.read().map_err(|e| {
        Error::retry(
            ErrorCode::AuthFailed,
            format!("cannot read the password: {e}"),
        )
    })?;
    let offered = features
        .sasl_mechanisms
        .iter()
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let (_, mut stream) = timed(
        "SASL",
        connect::authenticate(stream, &features, &login, password, info.secure),
    )
    .await?;
    checks.push(passed(
        "sasl",
        format!("authenticated as {login} (server offers {offered})"),
    ));

    let roster = timed("the roster request", async {
        let resource = format!("{RESOURCE_PREFIX}doctor-{:08x}", random_u64() as u32);
        connect::bind(&mut stream, &resource).await?;
        let get = Iq::from_get(
            "imstatus-doctor-roster",
            Roster {
                ver: None,
                items: Vec::new(),
            },
        );
        let payload = request(&mut stream, get, &login)
            .await?
            .map_err(|condition| {
                Error::retry(
                    ErrorCode::ProtocolError,
                    format!("the server refused the roster: {condition}"),
                )
            })?;
        payload
            .map(Roster::try_from)
            .transpose()
            .map_err(|e| Error::retry(ErrorCode::ProtocolError, format!("invalid roster: {e}")))
            .map(|r| {
                r.unwrap_or(Roster {
                    ver: None,
                    items: Vec::new(),
                })
            })
    })
    .await?;
    let items = roster.items.len();
    let tracked = if matches!(config.watch_as, WatchAs::Contact { .. }) {
        " (the watcher's)"
    } else if config.contacts {
        ""
    } else {
        " (not tracked: contacts = false)"
    };
    checks.push(passed(
        "roster",
        format!(
            "{items} contact{} in the roster{tracked}",
            if items == 1 { "" } else { "s" },
        ),
    ));

    if matches!(config.watch_as, WatchAs::Contact { .. }) {
        let denied = |detail: String| Error::fatal(ErrorCode::AccessDenied, detail);
        match subscription::in_roster(&roster, &user) {
            Some(Subscription::Approved) => checks.push(passed(
                "subscription",
                format!("{login} is subscribed to the presence of {user}"),
            )),
            Some(Subscription::Pending) => {
                return Err(denied(subscription::pending_detail(&login, &user)))
            }
            Some(Subscription::None) | None => {
                return Err(denied(format!(
                    "{login} has no presence subscription to {user} (watch_as = \"contact\")"
                )))
            }
        }
    }

    let check = match config.visibility {
        Visibility::Visible => passed(
            "visibility",
            "visible on purpose (visibility = \"visible\"): the user's contacts see an extra \
             available resource while imstatus runs"
                .to_owned(),
        ),
        visibility => {
            let disco = Iq::from_get("imstatus-doctor-disco", DiscoInfoQuery { node: None })
                .with_to(Jid::from(BareJid::from_parts(None, login.domain())));
            let payload = timed("service discovery", request(&mut stream, disco, &login))
                .await?
                .unwrap_or(None);
            let features = visibility::features(payload);
            match visibility::plan(visibility, &features) {
                Plan::Hide(methods) => {
                    let mut detail = String::from("invisible to the user's contacts");
                    for (i, method) in methods.iter().enumerate() {
                        detail.push_str(if i == 0 { " via the " } else { "; else the " });
                        detail.push_str(method.describe());
                    }
                    passed("visibility", detail)
                }
                Plan::Fallback(warning) => passed("visibility", format!("warning: {warning}")),
                Plan::Refuse(detail) => return Err(Error::fatal(ErrorCode::Unsupported, detail)),
                Plan::Visible => passed("visibility", "visible".to_owned()),
            }
        }
    };
    checks.push(check);
    // Best effort: say goodbye properly.
    let _ = tokio::time::timeout(Duration::from_secs(2), close(&mut stream)).await;
    Ok(())
}

/// Sends `iq` and waits for its result (`Ok(payload)`) or error (`Err(condition)`) from the
/// entity it went to ([`answers`]).
async fn request(
    stream: &mut connect::Stream,
    iq: Iq,
    login: &BareJid,
) -> Result<Result<Option<Element>, String>, Error> {
    let id = iq.id().to_owned();
    let to = match &iq {
        Iq::Get { to, .. } | Iq::Set { to, .. } | Iq::Result { to, .. } | Iq::Error { to, .. } => {
            to.clone()
        }
    };
    connect::send(stream, iq.into()).await?;
    loop {
        if let Next::Element(XmppStreamElement::Stanza(Stanza::Iq(iq))) =
            connect::next(stream).await?
        {
            match iq {
                Iq::Result {
                    id: got,
                    from,
                    payload,
                    ..
                } if got == id && answers(from.as_ref(), to.as_ref(), login) => {
                    return Ok(Ok(payload))
                }
                Iq::Error {
                    id: got,
                    from,
                    error,
                    ..
                } if got == id && answers(from.as_ref(), to.as_ref(), login) => {
                    return Ok(Err(crate::error::condition_name_of(&format!(
                        "{:?}",
                        error.defined_condition
                    ))))
                }
                _ => {}
            }
        }
    }
}

async fn close(stream: &mut connect::Stream) {
    let _ = futures_util::SinkExt::<&XmppStreamElement>::close(stream).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use imstatus_config::Secret;

    #[test]
    fn contact_mode_adds_the_subscription_step() {
        let mut c = XmppConfig::new("alice@example.test", Secret::Command("x".into()));
        assert_eq!(
            steps(&c),
            ["dns", "tcp", "tls", "sasl", "roster", "visibility"]
        );
        c.watch_as = WatchAs::Contact {
            watcher_jid: "watcher@example.test".into(),
        };
        assert_eq!(
            steps(&c),
            [
                "dns",
                "tcp",
                "tls",
                "sasl",
                "roster",
                "subscription",
                "visibility"
            ]
        );
    }
}
