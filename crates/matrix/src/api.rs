//! The few client-server API calls a presence watcher needs (`/versions`, `/login`,
//! `/account/whoami`, `/sync`, `/presence/{userId}/status`), and the mapping of the
//! homeserver's errors to codes.

use std::time::Duration;

use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use imstatus_core::ErrorCode;
use serde::Deserialize;
use serde_json::Value;

use crate::config::UserId;
use crate::http::{encode, Failure, Http, Response};
use imstatus_core::text::clip;

/// How long a login, `/versions`, `whoami` or a presence request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the homeserver may hold a `/sync` long-poll before answering "nothing new".
pub const SYNC_POLL: Duration = Duration::from_secs(30);
/// How much longer than the long-poll a `/sync` may take before the connection counts as
/// dead.
pub const SYNC_GRACE: Duration = Duration::from_secs(15);
/// The largest answer read from `/sync` (the filter keeps it to presence and, with contacts,
/// member events cut to four fields: an initial sync of 10,000 memberships is ~1.5 MiB).
pub const SYNC_CAP: usize = 8 * 1024 * 1024;
/// The largest answer read from any other call.
pub const SMALL_CAP: usize = 64 * 1024;
/// The longest wait an `M_LIMIT_EXCEEDED` may impose before we try again anyway.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// What a login gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Login {
    pub(crate) access_token: String,
    pub(crate) device_id: String,
}

/// `{errcode, error, retry_after_ms}` of an error answer.
#[derive(Deserialize, Default)]
struct MatrixError {
    #[serde(default)]
    errcode: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    retry_after_ms: Option<u64>,
}

/// The failure an error answer stands for. `login` says whether it answered a password
/// login (where `M_FORBIDDEN` means a wrong password).
pub(crate) fn failure(response: &Response, login: bool) -> Failure {
    let status = response.status;
    let body: MatrixError = serde_json::from_slice(&response.body).unwrap_or_default();
    let errcode = body.errcode.as_deref().unwrap_or("");
    let said = match (&body.errcode, &body.error) {
        (Some(c), Some(e)) => format!("{} {}: {}", status.as_u16(), clip(c, 60), clip(e, 200)),
        (Some(c), None) => format!("{} {}", status.as_u16(), clip(c, 60)),
        (None, _) => format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ),
    };
    if status == StatusCode::TOO_MANY_REQUESTS || errcode == "M_LIMIT_EXCEEDED" {
        let wait = body
            .retry_after_ms
            .map(Duration::from_millis)
            .or(response.retry_after)
            .map(|d| d.min(MAX_RETRY_AFTER));
        let mut f = Failure::retry(
            ErrorCode::AccessDenied,
            format!(
                "rate-limited by the homeserver ({said}){}",
                wait.map(|d| format!("; trying again in {} ms", d.as_millis()))
                    .unwrap_or_default()
            ),
        );
        f.retry_after = wait;
        return f;
    }
    match (status, errcode) {
        (_, "M_UNKNOWN_TOKEN" | "M_MISSING_TOKEN") => {
            let mut f = Failure::fatal(
                ErrorCode::AuthFailed,
                format!("the homeserver refused the access token ({said})"),
            );
            f.token_refused = true;
            f
        }
        (_, "M_USER_DEACTIVATED") => Failure::fatal(
            ErrorCode::AuthFailed,
            format!("the account is deactivated ({said})"),
        ),
        (StatusCode::FORBIDDEN, "M_FORBIDDEN") if login => Failure::fatal(
            ErrorCode::AuthFailed,
            format!("wrong user or password ({said})"),
        ),
        (StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED, _) => {
            Failure::retry(ErrorCode::AccessDenied, format!("refused: {said}"))
        }
        (s, _) if s.is_server_error() => Failure::retry(
            ErrorCode::ServerUnreachable,
            format!("the homeserver failed: {said}"),
        ),
        _ => Failure::retry(
            ErrorCode::ProtocolError,
            format!("unexpected answer: {said}"),
        ),
    }
}

fn protocol(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::retry(
        ErrorCode::ProtocolError,
        format!("{what}: {}", clip(&e.to_string(), 200)),
    )
}

/// The API of one homeserver.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    pub(crate) http: Http,
}

impl Api {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        timeout: Duration,
        cap: usize,
    ) -> Result<Response, Failure> {
        let login = path.ends_with("/login");
        let response = self
            .http
            .send(
                method,
                path,
                token,
                body.map(|b| b.to_string().into_bytes()),
                timeout,
                cap,
            )
            .await?;
        if response.status.is_success() {
            Ok(response)
        } else {
            Err(failure(&response, login))
        }
    }

    /// `GET /_matrix/client/versions`: the spec versions the server speaks.
    pub(crate) async fn versions(&self) -> Result<Vec<String>, Failure> {
        let r = self
            .call(
                Method::GET,
                "/_matrix/client/versions",
                None,
                None,
                REQUEST_TIMEOUT,
                SMALL_CAP,
            )
            .await?;
        #[derive(Deserialize)]
        struct Versions {
            versions: Vec<String>,
        }
        let v: Versions = serde_json::from_slice(&r.body).map_err(|e| {
            protocol(
                "GET /_matrix/client/versions: not a Matrix homeserver's answer",
                e,
            )
        })?;
        Ok(v.versions
            .into_iter()
            .take(64)
            .map(|s| clip(&s, 40))
            .collect())
    }

    /// `POST /_matrix/client/v3/login` with a password, as `device_id` (a new device when
    /// `None`).
    pub(crate) async fn login(
        &self,
        user: &UserId,
        password: &str,
        device_id: Option<&str>,
        device_name: &str,
    ) -> Result<Login, Failure> {
        let mut body = serde_json::json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user.as_str()},
            "password": password,
            "initial_device_display_name": device_name,
        });
        if let Some(device) = device_id {
            body["device_id"] = Value::String(device.to_owned());
        }
        let r = self
            .call(
                Method::POST,
                "/_matrix/client/v3/login",
                None,
                Some(body),
                REQUEST_TIMEOUT,
                SMALL_CAP,
            )
            .await?;
        #[derive(Deserialize)]
        struct Reply {
            access_token: String,
            device_id: String,
            user_id: String,
        }
        let reply: Reply = serde_json::from_slice(&r.body)
            .map_err(|e| protocol("POST /_matrix/client/v3/login: unreadable answer", e))?;
        if reply.user_id != user.as_str() {
            return Err(Failure::fatal(
                ErrorCode::AuthFailed,
                format!("logged in as {}, not as {user}", clip(&reply.user_id, 100)),
            ));
        }
        Ok(Login {
            access_token: reply.access_token,
            device_id: reply.device_id,
        })
    }

    /// `GET /_matrix/client/v3/account/whoami`, the raw answer (see [`whoami`]).
    pub(crate) async fn whoami_raw(&self, token: &str) -> Result<Bytes, Failure> {
        let r = self
            .call(
                Method::GET,
                "/_matrix/client/v3/account/whoami",
                Some(token),
                None,
                REQUEST_TIMEOUT,
                SMALL_CAP,
            )
            .await?;
        Ok(r.body)
    }

    /// `GET /_matrix/client/v3/presence/{user}/status`, the raw answer.
    pub(crate) async fn presence(&self, token: &str, user: &str) -> Result<Bytes, Failure> {
        let path = format!("/_matrix/client/v3/presence/{}/status", encode(user));
        let r = self
            .call(
                Method::GET,
                &path,
                Some(token),
                None,
                REQUEST_TIMEOUT,
                SMALL_CAP,
            )
            .await?;
        Ok(r.body)
    }

    /// Is presence enabled on the homeserver? Asks for the presence of a user who shares no
    /// room with anyone (`@imstatus-presence-probe:<server>`, normally not even registered):
    /// with presence enabled Synapse refuses (403), with presence disabled it answers
    /// `{"presence":"offline"}` for anyone. `None` when the answer says neither.
    pub(crate) async fn presence_enabled(
        &self,
        token: &str,
        user: &UserId,
    ) -> Result<Option<bool>, Failure> {
        let probe = format!("@imstatus-presence-probe:{}", user.server_name());
        match self.presence(token, &probe).await {
            Ok(body) => {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let only_offline = v.get("presence").and_then(Value::as_str) == Some("offline")
                    && v.as_object().is_some_and(|o| o.len() == 1);
                Ok(only_offline.then_some(false))
            }
            Err(f) if f.code == ErrorCode::AccessDenied && !f.detail.contains("rate-limited") => {
                Ok(Some(true))
            }
            Err(f) if f.code == ErrorCode::ProtocolError => Ok(None),
            Err(f) => Err(f),
        }
    }

    /// `PUT /_matrix/client/v3/presence/{user}/status`.
    pub(crate) async fn set_presence(
        &self,
        token: &str,
        user: &UserId,
        presence: &str,
        message: Option<&str>,
    ) -> Result<(), Failure> {
        let path = format!(
            "/_matrix/client/v3/presence/{}/status",
            encode(user.as_str())
        );
        let mut body = serde_json::json!({ "presence": presence });
        if let Some(m) = message {
            body["status_msg"] = Value::String(m.to_owned());
        }
        self.call(
            Method::PUT,
            &path,
            Some(token),
            Some(body),
            REQUEST_TIMEOUT,
            SMALL_CAP,
        )
        .await
        .map(drop)
    }

    /// `GET /_matrix/client/v3/sync` with `set_presence=offline` (always: a watcher must never
    /// make the user look online), the raw answer. `since = None` is an initial sync
    /// (answered at once); otherwise the server holds the request up to `poll`.
    pub(crate) async fn sync(
        &self,
        token: &str,
        filter: &str,
        since: Option<&str>,
        poll: Duration,
    ) -> Result<Bytes, Failure> {
        let mut path = format!(
            "/_matrix/client/v3/sync?set_presence=offline&filter={}",
            encode(filter)
        );
        match since {
            Some(since) => {
                path.push_str(&format!(
                    "&since={}&timeout={}",
                    encode(since),
                    poll.as_millis()
                ));
            }
            None => path.push_str("&timeout=0"),
        }
        let timeout = if since.is_some() {
            poll + SYNC_GRACE
        } else {
            REQUEST_TIMEOUT + SYNC_GRACE
        };
        let r = self
            .call(Method::GET, &path, Some(token), None, timeout, SYNC_CAP)
            .await?;
        Ok(r.body)
    }
}

/// The user and device of a `whoami` answer.
pub(crate) fn whoami(body: &[u8]) -> Result<(String, Option<String>), Failure> {
    #[derive(Deserialize)]
    struct Reply {
        user_id: String,
        #[serde(default)]
        device_id: Option<String>,
    }
    let reply: Reply = serde_json::from_slice(body).map_err(|e| {
        protocol(
            "GET /_matrix/client/v3/account/whoami: unreadable answer",
            e,
        )
    })?;
    Ok((
        clip(&reply.user_id, 100),
        reply.device_id.map(|d| clip(&d, 100)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Response {
        Response {
            status: StatusCode::from_u16(status).expect("status"),
            body: Bytes::from(body.to_owned()),
            retry_after: None,
        }
    }

    #[test]
    fn homeserver_errors_map_to_codes() {
        let f = failure(
            &answer(
                403,
                r#"{"errcode":"M_FORBIDDEN","error":"Invalid username or password"}"#,
            ),
            true,
        );
        assert_eq!((f.code, f.fatal), (ErrorCode::AuthFailed, true));
        assert_eq!(
            f.detail,
            "wrong user or password (403 M_FORBIDDEN: Invalid username or password)"
        );

        let f = failure(
            &answer(
                401,
                r#"{"errcode":"M_UNKNOWN_TOKEN","error":"Invalid access token passed.","soft_logout":false}"#,
            ),
            false,
        );
        assert_eq!(
            (f.code, f.fatal, f.token_refused),
            (ErrorCode::AuthFailed, true, true)
        );

        let f = failure(
            &answer(
                429,
                r#"{"errcode":"M_LIMIT_EXCEEDED","error":"Too Many Requests","retry_after_ms":5376}"#,
            ),
            true,
        );
        assert_eq!((f.code, f.fatal), (ErrorCode::AccessDenied, false));
        assert_eq!(f.retry_after, Some(Duration::from_millis(5376)));

        let mut r = answer(429, "");
        r.retry_after = Some(Duration::from_secs(7));
        assert_eq!(failure(&r, false).retry_after, Some(Duration::from_secs(7)));
        let f = failure(&answer(429, r#"{"retry_after_ms":99999999999}"#), false);
        assert_eq!(f.retry_after, Some(MAX_RETRY_AFTER));

        let f = failure(&answer(502, "<html>Bad gateway</html>"), false);
        assert_eq!((f.code, f.fatal), (ErrorCode::ServerUnreachable, false));
        assert_eq!(f.detail, "the homeserver failed: 502 Bad Gateway");

        let f = failure(
            &answer(403, r#"{"errcode":"M_FORBIDDEN","error":"nope"}"#),
            false,
        );
        assert_eq!((f.code, f.fatal), (ErrorCode::AccessDenied, false));

        let f = failure(&answer(404, r#"{"errcode":"M_UNRECOGNIZED"}"#), false);
        assert_eq!((f.code, f.fatal), (ErrorCode::ProtocolError, false));
    }
}
