//! `imstatus doctor` for XMPP accounts: DNS, TCP, TLS, SASL and roster, one check each.
//!
//! The steps are the source's own login steps, run one by one with a deadline each; the first
//! failure ends the run and the later steps are listed as skipped, so the user sees exactly
//! where it broke and what to do about it.

use std::future::Future;
use std::time::Duration;

use imstatus_core::{CodedError, ErrorCode};
use imstatus_hub::config::{TlsMode, XmppConfig};
use imstatus_hub::Check;
use tokio_xmpp::xmlstream::XmppStreamElement;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::BareJid;
use xmpp_parsers::roster::Roster;
use xmpp_parsers::stanza::Stanza;

use crate::connect::{self, Failure, Next};
use crate::source::{load_roots, random_u64, LOGIN_TIMEOUT};

/// The checks, in order.
const STEPS: [&str; 5] = ["dns", "tcp", "tls", "sasl", "roster"];

/// Checks an XMPP account step by step: `dns`, `tcp`, `tls`, `sasl`, `roster` (always five
/// checks; after the first failure the rest say they were skipped).
pub async fn doctor(config: &XmppConfig) -> Vec<Check> {
    let mut checks = Vec::with_capacity(STEPS.len());
    // Every step returns its success detail; the first failure stops the run.
    if let Err(failure) = run(config, &mut checks).await {
        let step = STEPS.get(checks.len()).copied().unwrap_or("roster");
        checks.push(failed(step, &failure));
    }
    while let Some(&step) = STEPS.get(checks.len()) {
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

fn failed(name: &'static str, failure: &Failure) -> Check {
    let hint = match (name, failure.code) {
        ("tls", ErrorCode::InvalidCertificate) => {
            "trust the server's CA with `ca_file = \"/path/to/ca.pem\"` (or fix the server's certificate)"
        }
        ("sasl", ErrorCode::AuthFailed) => {
            "check `jid` and the password in `password_file` / `password_command`"
        }
        ("roster", _) => "the login works but the session does not; check the server's log",
        (_, code) => code.hint(),
    };
    Check {
        name,
        ok: false,
        detail: CodedError::new(failure.code, failure.detail.clone()).to_string(),
        hint: Some(hint.to_owned()),
    }
}

/// Runs `step` with the login deadline.
async fn timed<T>(
    what: &str,
    step: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::time::timeout(LOGIN_TIMEOUT, step)
        .await
        .unwrap_or_else(|_| {
            Err(Failure::retry(
                ErrorCode::Timeout,
                format!("{what} did not finish within {LOGIN_TIMEOUT:?}"),
            ))
        })
}

async fn run(config: &XmppConfig, checks: &mut Vec<Check>) -> Result<(), Failure> {
    let user = BareJid::new(&config.jid)
        .ok()
        .filter(|j| j.node().is_some())
        .ok_or_else(|| {
            Failure::retry(
                ErrorCode::DnsFailed,
                format!("{:?} is not a bare JID like user@example.org", config.jid),
            )
        })?;
    let domain = user.domain().as_str();

    let resolved = timed(
        "the DNS lookup",
        connect::resolve(domain, config.server.as_deref()),
    )
    .await?;
    checks.push(passed("dns", resolved.how.clone()));

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
    checks.push(match (&roots, info.session) {
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
        Failure::retry(
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
        connect::authenticate(stream, &features, &user, password),
    )
    .await?;
    checks.push(passed(
        "sasl",
        format!("authenticated as {user} (server offers {offered})"),
    ));

    let items = timed("the roster request", async {
        let resource = format!("imstatus-doctor-{:08x}", random_u64() as u32);
        connect::bind(&mut stream, &resource).await?;
        const ID: &str = "imstatus-doctor-roster";
        let get = Iq::from_get(
            ID,
            Roster {
                ver: None,
                items: Vec::new(),
            },
        );
        connect::send(&mut stream, get.into()).await?;
        loop {
            if let Next::Element(XmppStreamElement::Stanza(Stanza::Iq(iq))) =
                connect::next(&mut stream).await?
            {
                match iq {
                    Iq::Result { id, payload, .. } if id == ID => {
                        let roster = payload.map(Roster::try_from).transpose().map_err(|e| {
                            Failure::retry(ErrorCode::ProtocolError, format!("invalid roster: {e}"))
                        })?;
                        return Ok(roster.map_or(0, |r| r.items.len()));
                    }
                    Iq::Error { id, error, .. } if id == ID => {
                        return Err(Failure::retry(
                            ErrorCode::ProtocolError,
                            format!(
                                "the server refused the roster: {:?}",
                                error.defined_condition
                            ),
                        ))
                    }
                    _ => {}
                }
            }
        }
    })
    .await?;
    checks.push(passed(
        "roster",
        format!(
            "{items} contact{} in the roster{}",
            if items == 1 { "" } else { "s" },
            if config.contacts {
                ""
            } else {
                " (not tracked: contacts = false)"
            }
        ),
    ));
    // Best effort: say goodbye properly.
    let _ = tokio::time::timeout(Duration::from_secs(2), close(&mut stream)).await;
    Ok(())
}

async fn close(stream: &mut connect::Stream) {
    let _ = futures_util::SinkExt::<&XmppStreamElement>::close(stream).await;
}
