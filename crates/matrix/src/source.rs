//! [`MatrixSource`]: log in once (or use the given token), then follow `/sync`.
//!
//! One session goes through these steps; a failure of any of them ends it with
//! `SourceDown(code)`, and the source starts over after the core's [`Backoff`] (longer when
//! the homeserver asked for it with `M_LIMIT_EXCEEDED`), except after `auth_failed`, which is
//! reported once and then the source stays down:
//!
//! 1. The access token: the stored one (password accounts), else a password login as the
//!    stored device (or a new one, named `device_name`), kept in the state file; or the token
//!    of `access_token_file`.
//! 2. An initial `/sync` (answered at once) and `GET /presence/{user}/status`: the state now,
//!    then `Synced`.
//! 3. Incremental `/sync` long-polls (30 s) until something fails.
//!
//! Every `/sync` carries `set_presence=offline`, so the watcher never marks the user online.
//! A refused token (`M_UNKNOWN_TOKEN`) is replaced by one new password login; if that token is
//! refused too before anything worked with it, or the account has no password, it is
//! `auth_failed`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Bytes;
use imstatus_core::{
    AccountId, Availability, Backoff, CodedError, ErrorCode, Observation, SourceKind, Status,
};
use imstatus_hub::{BoxFuture, Sink, Source};
use tokio::time::Instant;

use crate::api::{Api, SYNC_POLL};
use crate::config::{Credentials, MatrixConfig};
use crate::http::{Failure, Http};
use crate::state::StoredLogin;
use crate::translate::{self, Translator, BUSY};
use crate::KIND;

/// A session that lasted this long resets the reconnect backoff.
const HELD: Duration = Duration::from_secs(10);

/// Watches one Matrix account (see the module docs).
#[derive(Debug)]
pub struct MatrixSource {
    config: MatrixConfig,
    state_file: Option<PathBuf>,
    backoff_seed: u64,
    poll: Duration,
    api: Mutex<Option<Api>>,
    /// The access token of the running session, for `set_status`.
    token: Mutex<Option<String>>,
    /// Whether "presence is disabled" has been checked (once per source).
    probed: AtomicBool,
    /// Password logins made (for tests and `doctor`).
    logins: AtomicU64,
}

impl MatrixSource {
    /// A source for `account`; nothing happens until the hub runs it. Fails only when a
    /// password account has no state directory to keep its login in.
    pub fn new(config: &MatrixConfig, account: &AccountId) -> Result<Self, CodedError> {
        let state_file = config.state_file(account);
        if state_file.is_none() && matches!(config.credentials, Credentials::Password(_)) {
            return Err(CodedError::new(
                ErrorCode::AccessDenied,
                "no state directory for the Matrix login: set XDG_STATE_HOME or HOME",
            ));
        }
        Ok(MatrixSource {
            config: config.clone(),
            state_file,
            backoff_seed: random_u64(),
            poll: SYNC_POLL,
            api: Mutex::new(None),
            token: Mutex::new(None),
            probed: AtomicBool::new(false),
            logins: AtomicU64::new(0),
        })
    }

    /// Seeds the reconnect jitter (for reproducible tests).
    pub fn with_backoff_seed(mut self, seed: u64) -> Self {
        self.backoff_seed = seed;
        self
    }

    /// Sets how long the homeserver may hold one `/sync` (default 30 s).
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// How many password logins this source has made.
    pub fn logins(&self) -> u64 {
        self.logins.load(Ordering::Relaxed)
    }

    /// The client of the homeserver, made once (loading trust roots reads many files: off
    /// the async threads).
    pub(crate) async fn api(&self) -> Result<Api, Failure> {
        if let Some(api) = lock(&self.api).clone() {
            return Ok(api);
        }
        let api = make_api(&self.config).await?;
        *lock(&self.api) = Some(api.clone());
        Ok(api)
    }

    async fn run_loop(self: Arc<Self>, sink: Sink) {
        let mut backoff = Backoff::new(self.backoff_seed);
        let mut translator = Translator::new(self.config.user.clone(), self.config.contacts);
        loop {
            let (failure, synced_at) = self.session(&sink, &mut translator).await;
            *lock(&self.token) = None;
            tracing::debug!(user = %self.config.user, code = %failure.code, detail = %failure.detail, "Matrix session ended");
            sink.observe(Observation::SourceDown(failure.code, failure.detail));
            if failure.fatal {
                return;
            }
            if synced_at.is_some_and(|t| t.elapsed() >= HELD) {
                backoff.reset();
            }
            let mut delay = backoff.next_delay();
            if let Some(wait) = failure.retry_after {
                delay = delay.max(wait);
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// One session, from the token to its end; returns why it ended and when it synced.
    async fn session(
        &self,
        sink: &Sink,
        translator: &mut Translator,
    ) -> (Failure, Option<Instant>) {
        let api = match self.api().await {
            Ok(api) => api,
            Err(f) => return (f, None),
        };
        let mut auth = match self.authenticate(&api).await {
            Ok(auth) => auth,
            Err(f) => return (f, None),
        };
        let filter = translate::filter(&self.config.user, self.config.contacts);
        translator.reset();
        let mut batch = Vec::new();
        let initial = async {
            let body = self
                .call(&api, &mut auth, Call::Sync(&filter, None))
                .await?;
            let next = translator
                .handle_sync(&body, &mut batch)
                .map_err(|d| Failure::retry(ErrorCode::ProtocolError, d))?;
            let user = self.config.user.as_str();
            let body = self.call(&api, &mut auth, Call::Presence(user)).await?;
            translator
                .handle_own_status(&body, &mut batch)
                .map_err(|d| Failure::retry(ErrorCode::ProtocolError, d))?;
            if !self.probed.swap(true, Ordering::Relaxed) {
                if let Ok(Some(false)) = api.presence_enabled(&auth.token, &self.config.user).await
                {
                    batch.push(Observation::Anomaly(
                        ErrorCode::Unsupported,
                        PRESENCE_DISABLED.to_owned(),
                    ));
                }
            }
            Ok::<_, Failure>(next)
        };
        let mut since = match initial.await {
            Ok(next) => next,
            Err(f) => return (f, None),
        };
        batch.push(Observation::Synced);
        // Before the report: whoever sees it synced may call set_status at once.
        *lock(&self.token) = Some(auth.token.clone());
        sink.observe_all(batch);
        let synced_at = Instant::now();
        loop {
            let body = match self
                .call(&api, &mut auth, Call::Sync(&filter, Some(&since)))
                .await
            {
                Ok(body) => body,
                Err(mut f) => {
                    if f.code == ErrorCode::Timeout {
                        // The long-poll's connection went silent: the link is gone.
                        f.code = ErrorCode::Disconnected;
                    }
                    return (f, Some(synced_at));
                }
            };
            *lock(&self.token) = Some(auth.token.clone());
            let mut batch = Vec::new();
            match translator.handle_sync(&body, &mut batch) {
                Ok(next) => since = next,
                Err(d) => return (Failure::retry(ErrorCode::ProtocolError, d), Some(synced_at)),
            }
            if !batch.is_empty() {
                sink.observe_all(batch);
            }
        }
    }

    /// The token to start with: the stored login or a new one (password), or the file's.
    pub(crate) async fn authenticate(&self, api: &Api) -> Result<Auth, Failure> {
        match &self.config.credentials {
            Credentials::AccessToken(secret) => {
                let token = read_secret(secret.clone(), "the access token").await?;
                Ok(Auth {
                    token,
                    device_id: None,
                    relogged: false,
                })
            }
            Credentials::Password(_) => {
                let stored = self.stored().await;
                match stored {
                    Some(s) => Ok(Auth {
                        token: s.access_token,
                        device_id: Some(s.device_id),
                        relogged: false,
                    }),
                    None => {
                        let mut auth = Auth {
                            token: String::new(),
                            device_id: None,
                            relogged: false,
                        };
                        // A token refused right after this login is not worth another one.
                        self.login(api, &mut auth).await?;
                        Ok(auth)
                    }
                }
            }
        }
    }

    /// The stored login, if it is this user's on this homeserver.
    async fn stored(&self) -> Option<StoredLogin> {
        let path = self.state_file.clone()?;
        let stored = tokio::task::spawn_blocking(move || StoredLogin::load(&path))
            .await
            .ok()
            .flatten()?;
        (stored.user_id == self.config.user.as_str() && stored.homeserver == self.config.homeserver)
            .then_some(stored)
    }

    /// A password login as `auth`'s device (a new device when it has none); stores the result.
    async fn login(&self, api: &Api, auth: &mut Auth) -> Result<(), Failure> {
        let Credentials::Password(secret) = &self.config.credentials else {
            return Err(Failure::fatal(
                ErrorCode::AuthFailed,
                "no password to log in with",
            ));
        };
        let password = read_secret(secret.clone(), "the password").await?;
        self.logins.fetch_add(1, Ordering::Relaxed);
        let login = api
            .login(
                &self.config.user,
                &password,
                auth.device_id.as_deref(),
                &self.config.device_name,
            )
            .await?;
        tracing::debug!(user = %self.config.user, device = %login.device_id, "Matrix login");
        auth.token = login.access_token;
        auth.device_id = Some(login.device_id);
        auth.relogged = true;
        if let (Some(path), Some(device_id)) = (self.state_file.clone(), auth.device_id.clone()) {
            let stored = StoredLogin {
                homeserver: self.config.homeserver.clone(),
                user_id: self.config.user.as_str().to_owned(),
                device_id,
                access_token: auth.token.clone(),
            };
            let saved = tokio::task::spawn_blocking(move || stored.save(&path)).await;
            if let Ok(Err(e)) = saved {
                // The watch goes on; the next start logs in again (same device if its id was
                // kept, a new one otherwise).
                tracing::warn!(user = %self.config.user, error = %e, "cannot keep the Matrix login");
            }
        }
        Ok(())
    }

    /// One authenticated call; a refused token is replaced once by a new login.
    pub(crate) async fn call(
        &self,
        api: &Api,
        auth: &mut Auth,
        call: Call<'_>,
    ) -> Result<Bytes, Failure> {
        loop {
            let result = match call {
                Call::Sync(filter, since) => api.sync(&auth.token, filter, since, self.poll).await,
                Call::Presence(user) => api.presence(&auth.token, user).await,
                Call::Whoami => api.whoami_raw(&auth.token).await,
            };
            match result {
                Err(f) if f.token_refused => {
                    let can_relogin = matches!(self.config.credentials, Credentials::Password(_));
                    if !can_relogin {
                        let mut f = f;
                        f.detail
                            .push_str("; replace the token in access_token_file");
                        return Err(f);
                    }
                    if auth.relogged {
                        let mut f = f;
                        f.detail.push_str(" right after a new login");
                        return Err(f);
                    }
                    if let Some(path) = self.state_file.clone() {
                        let _ =
                            tokio::task::spawn_blocking(move || StoredLogin::forget(&path)).await;
                    }
                    self.login(api, auth).await?;
                }
                Ok(body) => {
                    auth.relogged = false;
                    return Ok(body);
                }
                Err(f) => return Err(f),
            }
        }
    }
}

/// What `doctor` and the source say when presence looks disabled.
pub(crate) const PRESENCE_DISABLED: &str = "presence looks disabled on the homeserver (it \
    answers \"offline\" for anyone): every user will look signed out; Synapse: set \
    `presence: {enabled: true}` in homeserver.yaml";

/// The token of a session, its device, and whether it came from a login with nothing yet
/// done with it.
pub(crate) struct Auth {
    pub(crate) token: String,
    pub(crate) device_id: Option<String>,
    relogged: bool,
}

#[derive(Clone, Copy)]
pub(crate) enum Call<'a> {
    /// `/sync` with this filter, from this batch (initial without).
    Sync(&'a str, Option<&'a str>),
    /// `GET /presence/{user}/status`.
    Presence(&'a str),
    /// `GET /account/whoami`.
    Whoami,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads a secret off the async threads (`password_command` may take a while).
async fn read_secret(secret: imstatus_config::Secret, what: &str) -> Result<String, Failure> {
    let read = tokio::task::spawn_blocking(move || secret.read().map_err(|e| e.to_string()))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    match read {
        Ok(s) if !s.is_empty() => Ok(s),
        Ok(_) => Err(Failure::fatal(
            ErrorCode::AuthFailed,
            format!("{what} is empty"),
        )),
        Err(e) => Err(Failure::fatal(
            ErrorCode::AuthFailed,
            format!("cannot read {what}: {e}"),
        )),
    }
}

/// The HTTP client of `config`'s homeserver, with trust roots for https.
pub(crate) async fn make_api(config: &MatrixConfig) -> Result<Api, Failure> {
    let tls = if config.homeserver.starts_with("https://") {
        let ca_file = config.ca_file.clone();
        let roots = tokio::task::spawn_blocking(move || {
            imstatus_tls::Roots::load(ca_file.as_deref()).and_then(|r| r.client_config())
        })
        .await
        .unwrap_or_else(|e| Err(imstatus_tls::Error::Setup(e.to_string())));
        match roots {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => return Err(Failure::retry(ErrorCode::InvalidCertificate, e.to_string())),
        }
    } else {
        None
    };
    Ok(Api {
        http: Http::new(&config.homeserver, tls),
    })
}

/// The Matrix presence for an availability; `None` where Matrix has none.
pub fn presence_for(availability: Availability) -> Option<&'static str> {
    match availability {
        Availability::Available | Availability::Chatty => Some("online"),
        Availability::Away | Availability::ExtendedAway => Some("unavailable"),
        Availability::Busy => Some(BUSY),
        Availability::Offline => Some("offline"),
        Availability::Invisible | Availability::Unknown => None,
    }
}

impl Source for MatrixSource {
    fn kind(&self) -> SourceKind {
        KIND
    }

    fn run(self: Arc<Self>, sink: Sink) -> BoxFuture<'static, ()> {
        Box::pin(self.run_loop(sink))
    }

    fn set_status(&self, status: Status) -> BoxFuture<'_, Result<(), CodedError>> {
        Box::pin(async move {
            let Some(presence) = presence_for(status.availability) else {
                return Err(CodedError::new(
                    ErrorCode::Unsupported,
                    format!("Matrix has no presence for {}", status.availability),
                ));
            };
            let Some(token) = lock(&self.token).clone() else {
                return Err(CodedError::new(
                    ErrorCode::NotSignedIn,
                    "the Matrix source is not connected to the homeserver",
                ));
            };
            let api = self
                .api()
                .await
                .map_err(|f| CodedError::new(f.code, f.detail))?;
            api.set_presence(
                &token,
                &self.config.user,
                presence,
                status.message.as_deref(),
            )
            .await
            .map_err(|f| {
                if presence == BUSY && f.code == ErrorCode::ProtocolError {
                    CodedError::new(
                        ErrorCode::Unsupported,
                        format!(
                            "the homeserver has no busy presence (MSC3026): {}",
                            f.detail
                        ),
                    )
                } else {
                    CodedError::new(f.code, f.detail)
                }
            })
        })
    }
}

/// 64 random bits from the standard library's per-process hash keys, the clock and a counter
/// (backoff jitter needs variety, not cryptographic strength).
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_availability_has_a_presence_or_is_unsupported() {
        let table: Vec<(Availability, Option<&str>)> = Availability::ALL
            .iter()
            .map(|a| (*a, presence_for(*a)))
            .collect();
        assert_eq!(
            table,
            vec![
                (Availability::Offline, Some("offline")),
                (Availability::Available, Some("online")),
                (Availability::Chatty, Some("online")),
                (Availability::Invisible, None),
                (Availability::Busy, Some(BUSY)),
                (Availability::Away, Some("unavailable")),
                (Availability::ExtendedAway, Some("unavailable")),
                (Availability::Unknown, None),
            ]
        );
    }
}
