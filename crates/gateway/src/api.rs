//! The request/response routes: account snapshots, contacts, setting status, the badge, the
//! dashboard's files, the OpenAPI document, metrics, health and the fallbacks; and the
//! middleware that times every routed request for the metrics.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use imstatus_core::{
    AccountId, Activity, Availability, Client, Contact, Event, Session, Status, Timestamp,
};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use crate::auth::{query_param, Access, Caller};
use crate::error::{printable, ApiError};
use crate::gateway::{Gateway, GatewayState};

/// The largest body `PUT …/status` accepts.
pub(crate) const STATUS_BODY_LIMIT: usize = 16 * 1024;
/// The longest status message `PUT …/status` accepts, in characters.
const MAX_MESSAGE_CHARS: usize = 1024;

/// The `{name}` of an account path, with a JSON error for undecodable paths.
pub(crate) struct AccountName(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for AccountName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(name)) => Ok(AccountName(name)),
            Err(e) => Err(ApiError::bad_request(format!(
                "the account name in the path is not valid: {}",
                e.body_text()
            ))),
        }
    }
}

/// A JSON response from bytes already serialised.
fn json(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// The snapshot of an account the caller may see, or the same 404 whether it does not exist
/// or is outside the caller's scope.
fn visible_snapshot(gw: &Gateway, caller: &Caller, name: &str) -> Result<Event, ApiError> {
    let account = AccountId::new(name);
    if !caller.can_see(&account) {
        return Err(ApiError::no_account(name));
    }
    gw.hub
        .snapshot(&account)
        .ok_or_else(|| ApiError::no_account(name))
}

/// `GET /v1/accounts`: a JSON array with one snapshot per account the caller may see, from
/// the rendered snapshots (each account read on its own: the hub's lock is never held for
/// the whole list, nor while anything is serialised).
pub(crate) async fn list_accounts(
    State(gw): State<GatewayState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let now = Timestamp::from_system_time(SystemTime::now());
    let mut out = Vec::with_capacity(gw.list_hint.load(Ordering::Relaxed));
    out.push(b'[');
    for account in gw.snapshots.accounts() {
        if !caller.can_see(account) {
            continue;
        }
        let mark = out.len();
        if mark > 1 {
            out.push(b',');
        }
        if !gw
            .snapshots
            .write(&gw.hub, account.as_str(), now, &mut out)?
        {
            out.truncate(mark);
        }
    }
    out.push(b']');
    gw.list_hint.store(out.len(), Ordering::Relaxed);
    Ok(json(StatusCode::OK, out))
}

/// `GET /v1/accounts/{name}`: the account's snapshot, from its rendered bytes.
pub(crate) async fn get_account(
    State(gw): State<GatewayState>,
    caller: Caller,
    AccountName(name): AccountName,
) -> Result<Response, ApiError> {
    account(&gw, caller.access(), &name)
}

/// The answer of `GET /v1/accounts/{name}` to `caller`: [`get_account`], and the gateway's
/// direct path for it ([`crate::fast`]).
pub(crate) fn account(gw: &Gateway, caller: Access<'_>, name: &str) -> Result<Response, ApiError> {
    if !caller.can_see(name) {
        return Err(ApiError::no_account(name));
    }
    let mut out = Vec::with_capacity(1024);
    if !gw.snapshots.write(
        &gw.hub,
        name,
        Timestamp::from_system_time(SystemTime::now()),
        &mut out,
    )? {
        return Err(ApiError::no_account(name));
    }
    Ok(json(StatusCode::OK, out))
}

#[derive(Serialize)]
struct ContactsView<'a> {
    account: &'a AccountId,
    seq: u64,
    time: Timestamp,
    contacts: &'a [Contact],
}

/// `GET /v1/accounts/{name}/contacts`: the account's contacts and their presence.
pub(crate) async fn get_contacts(
    State(gw): State<GatewayState>,
    caller: Caller,
    AccountName(name): AccountName,
) -> Result<Response, ApiError> {
    let event = visible_snapshot(&gw, &caller, &name)?;
    let contacts = event.snapshot().map_or(&[][..], |s| &s.contacts[..]);
    let view = ContactsView {
        account: &event.account,
        seq: event.seq,
        time: event.time,
        contacts,
    };
    let out = serde_json::to_vec(&view)
        .map_err(|e| ApiError::internal(format!("serialising contacts: {e}")))?;
    Ok(json(StatusCode::OK, out))
}

/// The body of `PUT /v1/accounts/{name}/status`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetStatusBody {
    availability: String,
    #[serde(default)]
    message: Option<String>,
}

/// Parses and checks a `PUT …/status` body.
fn parse_status(body: &[u8]) -> Result<Status, ApiError> {
    let shape = |e: &dyn std::fmt::Display| {
        ApiError::bad_request(format!(
            "the body must be a JSON object like {{\"availability\": \"away\", \"message\": \"lunch\"}}: {e}"
        ))
    };
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| shape(&e))?;
    if !value.is_object() {
        return Err(shape(&"not an object"));
    }
    let body = SetStatusBody::deserialize(value).map_err(|e| shape(&e))?;
    let availability: Availability =
        body.availability
            .parse()
            .map_err(|e: imstatus_core::state::UnknownAvailability| {
                ApiError::bad_request(printable(&e.to_string()))
            })?;
    if availability == Availability::Unknown {
        return Err(ApiError::bad_request(
            "`unknown` is not a status that can be set",
        ));
    }
    let message = body.message.unwrap_or_default();
    if message.chars().count() > MAX_MESSAGE_CHARS {
        return Err(ApiError::bad_request(format!(
            "the message is longer than {MAX_MESSAGE_CHARS} characters"
        )));
    }
    if message
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(ApiError::bad_request(
            "the message contains control characters",
        ));
    }
    Ok(Status::with_message(availability, message))
}

/// `PUT /v1/accounts/{name}/status`: sets the user's status through the account's source
/// (204), with the source's own error otherwise (`unsupported` → 501).
pub(crate) async fn set_status(
    State(gw): State<GatewayState>,
    caller: Caller,
    AccountName(name): AccountName,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let account = AccountId::new(name.as_str());
    if !caller.can_see(&account) || gw.hub.source_kind(&account).is_none() {
        return Err(ApiError::no_account(&name));
    }
    if !caller.can_write() {
        if caller.is_open() {
            return Err(ApiError::forbidden(
                "without tokens the gateway is read-only: any local user or process could \
                 otherwise set your status",
            )
            .with_hint(
                "to let every local process set status without a token, put \
                 `tokenless_write = true` under [serve]; or add a [[serve.token]] with \
                 `write = true` and send it as a bearer token",
            ));
        }
        return Err(ApiError::forbidden(
            "this token may only read; setting status needs a token with `write = true`",
        ));
    }
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large(STATUS_BODY_LIMIT)
        } else {
            ApiError::bad_request(format!("cannot read the body: {}", e.body_text()))
        }
    })?;
    let status = parse_status(&body)?;
    tracing::info!(account = %account, availability = %status.availability, token = caller.name(), "setting status");
    match tokio::time::timeout(gw.set_status_timeout, gw.hub.set_status(&account, status)).await {
        Ok(Ok(())) => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(Err(e)) => Err(ApiError::from(e)),
        Err(_) => Err(ApiError::coded(
            StatusCode::GATEWAY_TIMEOUT,
            imstatus_core::ErrorCode::Timeout,
            format!(
                "the source did not answer within {} s",
                gw.set_status_timeout.as_secs_f32()
            ),
        )),
    }
}

/// `GET /v1/accounts/{name}/badge.svg`: a small status badge.
pub(crate) async fn badge(
    State(gw): State<GatewayState>,
    caller: Caller,
    AccountName(name): AccountName,
    uri: Uri,
) -> Result<Response, ApiError> {
    let event = visible_snapshot(&gw, &caller, &name)?;
    let label = query_param(&uri, "label")
        .filter(|l| !l.trim().is_empty())
        .unwrap_or_else(|| event.account.to_string());
    let label: String = label.chars().take(40).collect();
    let (value, color) = match event.snapshot() {
        Some(s) => badge_value(s.client, s.session, s.availability, s.activity.as_ref()),
        None => ("unknown".to_owned(), GREY),
    };
    let svg = crate::badge::render(&label, &value, color);
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache, max-age=0"),
        ],
        svg,
    )
        .into_response())
}

const GREY: &str = "#9f9f9f";

/// What a badge says and its colour. An account on a call (microphone or camera in use)
/// says `on a call` in the busy colour, whatever its IM status; an account with an activity
/// but no IM status at all (the desktop source) says `locked`, `idle` or `active`.
fn badge_value(
    client: Client,
    session: Session,
    availability: Availability,
    activity: Option<&Activity>,
) -> (String, &'static str) {
    if client == Client::NotRunning {
        return ("not running".to_owned(), "#6e7781");
    }
    if let Some(a) = activity {
        if a.in_call {
            return ("on a call".to_owned(), "#cf222e");
        }
        if session == Session::Unknown && availability == Availability::Unknown {
            let (text, color) = if a.locked {
                ("locked", "#6e7781")
            } else if a.idle {
                ("idle", "#d4a72c")
            } else {
                ("active", "#2da44e")
            };
            return (text.to_owned(), color);
        }
    }
    let color = match availability {
        Availability::Available | Availability::Chatty => "#2da44e",
        Availability::Away => "#d4a72c",
        Availability::ExtendedAway => "#e16f24",
        Availability::Busy => "#cf222e",
        Availability::Invisible => "#8c959f",
        Availability::Offline => "#6e7781",
        Availability::Unknown => GREY,
    };
    let text = match (session, availability) {
        (Session::SigningIn, _) => "signing in".to_owned(),
        (Session::SigningOut, _) => "signing out".to_owned(),
        (Session::Unknown, Availability::Unknown) => "unknown".to_owned(),
        (_, a) => a.as_str().replace('_', " "),
    };
    (text, color)
}

/// `GET /`: the dashboard.
pub(crate) async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                 img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        crate::dashboard::INDEX_HTML,
    )
        .into_response()
}

/// `GET /dashboard.js`.
pub(crate) async fn dashboard_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        crate::dashboard::DASHBOARD_JS,
    )
        .into_response()
}

/// `GET /dashboard.css`.
pub(crate) async fn dashboard_css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        crate::dashboard::DASHBOARD_CSS,
    )
        .into_response()
}

/// `GET /openapi.json`.
pub(crate) async fn openapi(State(gw): State<GatewayState>) -> Response {
    let kinds: Vec<_> = gw
        .hub
        .accounts()
        .iter()
        .filter_map(|a| gw.hub.source_kind(a))
        .collect();
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        crate::openapi_document(&kinds).to_string(),
    )
        .into_response()
}

/// `GET /healthz`: 200 `{"status":"ok"}`, or 503 `{"status":"shutting_down"}` while draining.
pub(crate) async fn healthz(State(gw): State<GatewayState>) -> Response {
    if gw.is_shutting_down() {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            br#"{"status":"shutting_down"}"#.to_vec(),
        )
    } else {
        json(StatusCode::OK, br#"{"status":"ok"}"#.to_vec())
    }
}

/// `GET /metrics`: Prometheus text; per-account series only for the caller's accounts.
pub(crate) async fn metrics(State(gw): State<GatewayState>, caller: Caller) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        gw.metrics.render(
            &gw.hub,
            gw.open_connections(),
            &caller,
            gw.extra_metrics.as_ref(),
        ),
    )
        .into_response()
}

/// Every path that is not a route.
pub(crate) async fn not_found(State(gw): State<GatewayState>) -> ApiError {
    gw.metrics.record_unmatched(StatusCode::NOT_FOUND);
    ApiError::not_found("no such route; see /openapi.json")
}

/// A route asked with a method it does not take.
pub(crate) async fn method_not_allowed(State(gw): State<GatewayState>) -> ApiError {
    gw.metrics.record_unmatched(StatusCode::METHOD_NOT_ALLOWED);
    ApiError::method_not_allowed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_bodies_are_checked() {
        let ok = parse_status(br#"{"availability":"Extended-Away","message":"gone"}"#);
        assert_eq!(
            ok.ok(),
            Some(Status::with_message(Availability::ExtendedAway, "gone"))
        );
        let plain = parse_status(br#"{"availability":"busy"}"#);
        assert_eq!(plain.ok(), Some(Status::new(Availability::Busy)));
        for bad in [
            &br#"{"availability":"asleep"}"#[..],
            br#"{"availability":"unknown"}"#,
            br#"{"availability":"away","mood":"meh"}"#,
            br#"{"message":"x"}"#,
            br#"{"availability":1}"#,
            br#"["away"]"#,
            b"",
            b"\xff\xfe",
            br#"{"availability":"away","message":"a\u0000b"}"#,
        ] {
            let e = parse_status(bad).expect_err("rejected");
            assert_eq!(e.code(), "bad_request", "{}", String::from_utf8_lossy(bad));
        }
        let long = format!(
            r#"{{"availability":"away","message":"{}"}}"#,
            "x".repeat(2000)
        );
        assert!(parse_status(long.as_bytes()).is_err());
    }

    #[test]
    fn badge_text_and_colour_follow_the_state() {
        assert_eq!(
            badge_value(
                Client::Unknown,
                Session::SignedIn,
                Availability::ExtendedAway,
                None
            ),
            ("extended away".to_owned(), "#e16f24")
        );
        assert_eq!(
            badge_value(
                Client::NotRunning,
                Session::SignedOut,
                Availability::Offline,
                None
            )
            .0,
            "not running"
        );
        assert_eq!(
            badge_value(
                Client::Running,
                Session::SigningIn,
                Availability::Offline,
                None
            )
            .0,
            "signing in"
        );
    }

    #[test]
    fn a_call_shows_on_the_badge_and_a_desktop_says_what_it_does() {
        let desk = |a: Activity| {
            badge_value(
                Client::Running,
                Session::Unknown,
                Availability::Unknown,
                Some(&a),
            )
        };
        let call = Activity {
            microphone: true,
            in_call: true,
            ..Activity::default()
        };
        assert_eq!(desk(call.clone()), ("on a call".to_owned(), "#cf222e"));
        assert_eq!(
            desk(Activity {
                locked: true,
                idle: true,
                ..Activity::default()
            }),
            ("locked".to_owned(), "#6e7781")
        );
        assert_eq!(
            desk(Activity {
                idle: true,
                ..Activity::default()
            }),
            ("idle".to_owned(), "#d4a72c")
        );
        assert_eq!(desk(Activity::default()), ("active".to_owned(), "#2da44e"));
        // An IM account that also reports a call: the call wins; otherwise its status.
        assert_eq!(
            badge_value(
                Client::Running,
                Session::SignedIn,
                Availability::Available,
                Some(&call)
            ),
            ("on a call".to_owned(), "#cf222e")
        );
        assert_eq!(
            badge_value(
                Client::Running,
                Session::SignedIn,
                Availability::Away,
                Some(&Activity::default())
            ),
            ("away".to_owned(), "#d4a72c")
        );
        // A desktop whose signals all went away.
        assert_eq!(
            badge_value(
                Client::NotRunning,
                Session::Unknown,
                Availability::Unknown,
                Some(&call)
            )
            .0,
            "not running"
        );
    }
}
