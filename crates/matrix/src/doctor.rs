//! `imstatus doctor` for Matrix accounts: `versions` (DNS, TCP, TLS and "is this a Matrix
//! homeserver"), `login`, `sync` and `presence`, one check each.
//!
//! The steps are the source's own, run one by one; the first failure ends the run and the
//! later steps are listed as skipped. The doctor logs in as the source would (the stored
//! device, or a new one that it stores for the source), syncs with `set_presence=offline`
//! and never changes the user's presence.

use imstatus_core::{CodedError, ErrorCode};
use imstatus_hub::Check;
use serde_json::Value;

use crate::api;
use crate::config::{Credentials, MatrixConfig};
use crate::http::Failure;
use crate::source::{make_api, Call, MatrixSource, PRESENCE_DISABLED};
use crate::translate;

const STEPS: [&str; 4] = ["versions", "login", "sync", "presence"];

/// Checks a Matrix account step by step (see the module docs).
pub async fn doctor(config: &MatrixConfig) -> Vec<Check> {
    let mut checks = Vec::with_capacity(STEPS.len());
    if let Err(failure) = run(config, &mut checks).await {
        let step = STEPS.get(checks.len()).copied().unwrap_or("presence");
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

fn failed(name: &'static str, failure: &Failure) -> Check {
    let hint = match (name, failure.code) {
        ("versions", ErrorCode::InvalidCertificate) => {
            "trust the homeserver's CA with `ca_file = \"/path/to/ca.pem\"` (or fix its certificate)"
        }
        ("versions", ErrorCode::ProtocolError) => {
            "`homeserver` must be the client-server API's base URL (what `/.well-known/matrix/client` \
             names as m.homeserver), not the web client's"
        }
        ("versions", ErrorCode::ServerUnreachable | ErrorCode::DnsFailed) => {
            "check `homeserver` (scheme, host and port) and that the homeserver runs"
        }
        ("login", ErrorCode::AuthFailed) => {
            "check `user` and the password in `password_file` / `password_command`, or the token \
             in `access_token_file`"
        }
        ("login" | "sync", ErrorCode::AccessDenied) if failure.retry_after.is_some() => {
            "the homeserver rate-limits this account or address; wait and try again"
        }
        ("presence", ErrorCode::Unsupported) => {
            "ask the homeserver's admin to enable presence (Synapse: `presence: {enabled: true}`); \
             many deployments switch it off for load"
        }
        (_, code) => code.hint(),
    };
    Check {
        name,
        ok: false,
        detail: CodedError::new(failure.code, failure.detail.clone()).to_string(),
        hint: Some(hint.to_owned()),
    }
}

async fn run(config: &MatrixConfig, checks: &mut Vec<Check>) -> Result<(), Failure> {
    let api = make_api(config).await?;
    let versions = api.versions().await?;
    let newest = versions.last().cloned().unwrap_or_else(|| "none".into());
    checks.push(Check::pass(
        "versions",
        format!(
            "{} answers as a Matrix homeserver (spec versions up to {newest}); `homeserver` is \
             set, so no .well-known discovery",
            api.http.base()
        ),
    ));

    let source =
        MatrixSource::new(config, &config.account).map_err(|e| Failure::fatal(e.code, e.detail))?;
    let mut auth = source.authenticate(&api).await?;
    let body = source.call(&api, &mut auth, Call::Whoami).await?;
    let (user_id, device) = api::whoami(&body)?;
    if user_id != config.user.as_str() {
        return Err(Failure::fatal(
            ErrorCode::AuthFailed,
            format!(
                "the access token belongs to {user_id}, not to {}",
                config.user
            ),
        ));
    }
    let how = match (&config.credentials, source.logins()) {
        (Credentials::AccessToken(_), _) => "the access token of access_token_file".to_owned(),
        (Credentials::Password(_), 0) => "the stored login".to_owned(),
        (Credentials::Password(_), _) => "a password login (kept for the source)".to_owned(),
    };
    checks.push(Check::pass(
        "login",
        format!(
            "{user_id}, device {}, with {how}",
            device.as_deref().unwrap_or("(none)")
        ),
    ));

    let filter = translate::filter(&config.user, config.contacts);
    let body = source
        .call(&api, &mut auth, Call::Sync(&filter, None))
        .await?;
    let mut observations = Vec::new();
    let mut translator = translate::Translator::new(config.user.clone(), config.contacts);
    translator
        .handle_sync(&body, &mut observations)
        .map_err(|d| Failure::retry(ErrorCode::ProtocolError, d))?;
    checks.push(Check::pass(
        "sync",
        format!(
            "initial /sync with set_presence=offline: {} bytes{}",
            body.len(),
            if config.contacts {
                format!(", {} contacts", translator.contact_count())
            } else {
                String::new()
            }
        ),
    ));

    if api.presence_enabled(&auth.token, &config.user).await? == Some(false) {
        return Err(Failure::retry(ErrorCode::Unsupported, PRESENCE_DISABLED));
    }
    let body = source
        .call(&api, &mut auth, Call::Presence(config.user.as_str()))
        .await?;
    let own: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let presence = own.get("presence").and_then(Value::as_str).map_or_else(
        || "(unreadable)".to_owned(),
        |p| imstatus_core::text::clip(p, 40),
    );
    checks.push(Check::pass(
        "presence",
        format!("enabled; {} is {presence} now", config.user),
    ));
    Ok(())
}
