//! A private Synapse (Matrix homeserver) on loopback, and a tiny blocking client for the
//! user's "other client" in tests (`docs/matrix-recipe.md` in the shared docs: §2 config, §3
//! start/stop, §4 accounts and rooms, §5 presence).
//!
//! Synapse comes from PyPI (pinned `matrix-synapse==1.163.2`) in a venv that
//! `scripts/lib.sh`'s `ensure_synapse` installs at
//! `${XDG_CACHE_HOME:-$HOME/.cache}/imstatus/synapse-1.163.2`; `IMSTATUS_SYNAPSE_VENV`
//! overrides the path. The test config keeps presence timers short (`sync_online_timeout:
//! 5s`), turns the /sync response cache off (pitfall M2) and relaxes every rate limit (M6).
//! Note M3: Synapse never times anyone out in the first 30 s after it starts.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha1::Sha1;
use tempfile::TempDir;

use crate::process::{find_program, kill_child, log_since, read_log, run, stop_child};
use crate::{free_port, try_wait_until, Error, Result};

/// The pinned Synapse release.
pub const SYNAPSE_VERSION: &str = "1.163.2";
/// The server name every testkit Synapse serves.
const SERVER_NAME: &str = "example.test";
/// The shared secret of the admin registration API.
const SHARED_SECRET: &str = "imstatus-test-secret";
/// How long Synapse may take to answer `/health` (1.4-2.1 s seen, §3).
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long Synapse gets after SIGTERM before SIGKILL (M8).
const TERM_GRACE: Duration = Duration::from_secs(15);
/// How often [`Synapse::start`] picks a new port when another process took the chosen one.
const PORT_ATTEMPTS: usize = 5;
/// The install command named when the venv is missing.
const INSTALL: &str = "bash -c '. scripts/lib.sh; ensure_synapse'";

/// What [`Synapse::start_with`] sets up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynapseOptions {
    /// `presence: {enabled: …}` (many deployments switch it off).
    pub presence: bool,
    /// A second client listener with TLS (a self-signed certificate for `127.0.0.1` and
    /// `localhost`, see [`Synapse::tls_url`] and [`Synapse::ca_cert`]); the testkit's own
    /// client keeps using the plain one.
    pub tls: bool,
}

impl Default for SynapseOptions {
    /// Presence enabled, no TLS listener.
    fn default() -> Self {
        SynapseOptions {
            presence: true,
            tls: false,
        }
    }
}

/// A user as registered: its ID, and the access token and device registration gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixUser {
    /// `@local:example.test`.
    pub user_id: String,
    /// An access token (of the device registration created).
    pub access_token: String,
    /// That device.
    pub device_id: String,
}

/// An HTTP answer: status and JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body, parsed.
    pub body: Value,
}

/// A running (or stopped) private Synapse serving `example.test` on one loopback port.
///
/// Only the client listener is open, on 127.0.0.1, with no federation and no key servers.
/// Dropping it stops the server (SIGTERM, SIGKILL after 15 s) and deletes its directory.
#[derive(Debug)]
pub struct Synapse {
    python: PathBuf,
    config: PathBuf,
    log: PathBuf,
    port: u16,
    presence: bool,
    /// The TLS listener's port and the certificate it serves.
    tls: Option<(u16, PathBuf)>,
    child: Option<Child>,
    // Last, so that it is deleted after the server is stopped.
    dir: TempDir,
}

impl Synapse {
    /// The venv's Python: `$IMSTATUS_SYNAPSE_VENV`, else the default cache path; an
    /// [`Error::MissingProgram`] naming the install command when Synapse is not in it.
    pub fn python() -> Result<PathBuf> {
        let venv = std::env::var_os("IMSTATUS_SYNAPSE_VENV")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                let cache = std::env::var_os("XDG_CACHE_HOME")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
                    .or_else(|| {
                        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache"))
                    })?;
                Some(cache.join(format!("imstatus/synapse-{SYNAPSE_VERSION}")))
            })
            .unwrap_or_default();
        let python = venv.join("bin/python");
        let installed = venv
            .join("lib")
            .read_dir()
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .any(|d| {
                d.path()
                    .join("site-packages/synapse/app/homeserver.py")
                    .is_file()
            });
        if python.is_file() && installed {
            Ok(python)
        } else {
            Err(Error::MissingProgram {
                program: format!("Synapse {SYNAPSE_VERSION} in {}", venv.display()),
                hint: INSTALL.to_owned(),
            })
        }
    }

    /// Starts Synapse with presence enabled (see [`Synapse::start_with`]).
    pub fn start() -> Result<Synapse> {
        Synapse::start_with(SynapseOptions::default())
    }

    /// Writes the config and a signing key and starts Synapse, returning once `/health`
    /// answers.
    pub fn start_with(opts: SynapseOptions) -> Result<Synapse> {
        let python = Synapse::python()?;
        let dir = tempfile::Builder::new()
            .prefix("imstatus-synapse-")
            .tempdir()
            .map_err(|e| Error::io("creating Synapse's temp dir", e))?;
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .map_err(|e| Error::io("reading /dev/urandom", e))?;
        let signing_key = dir.path().join("signing.key");
        std::fs::write(&signing_key, format!("ed25519 a_test {}\n", base64(&key)))
            .map_err(|e| Error::io("writing the signing key", e))?;
        let mut synapse = Synapse {
            python,
            config: dir.path().join("homeserver.yaml"),
            log: dir.path().join("synapse.log"),
            port: free_port(),
            presence: opts.presence,
            tls: None,
            child: None,
            dir,
        };
        if opts.tls {
            let cert = make_certificate(synapse.dir.path())?;
            synapse.tls = Some((free_port(), cert));
        }
        synapse.write_config()?;
        let mut attempt = 1;
        loop {
            match synapse.launch() {
                Err(Error::Command { what, .. })
                    if what == PORT_TAKEN && attempt < PORT_ATTEMPTS =>
                {
                    attempt += 1;
                    synapse.port = free_port();
                    if let Some((port, _)) = &mut synapse.tls {
                        *port = free_port();
                    }
                    synapse.write_config()?;
                }
                other => return other.map(|()| synapse),
            }
        }
    }

    /// The client API's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `https://127.0.0.1:<tls port>` when started with [`SynapseOptions::tls`].
    pub fn tls_url(&self) -> Option<String> {
        self.tls
            .as_ref()
            .map(|(port, _)| format!("https://127.0.0.1:{port}"))
    }

    /// The TLS listener's self-signed certificate (PEM, `CA:FALSE`), for clients to trust.
    pub fn ca_cert(&self) -> Option<&Path> {
        self.tls.as_ref().map(|(_, cert)| cert.as_path())
    }

    /// The server name, `example.test`.
    pub fn server_name(&self) -> &str {
        SERVER_NAME
    }

    /// `@local:example.test`.
    pub fn user_id(&self, local: &str) -> String {
        format!("@{local}:{SERVER_NAME}")
    }

    /// The temp dir holding config, database and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Synapse's log (stdout and stderr: it logs to the console).
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// Stops the server: SIGTERM, SIGKILL after 15 s, and reaps it (it persists presence on
    /// the way out, §3). Does nothing if it is not running.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, "synapse", TERM_GRACE)?;
        }
        Ok(())
    }

    /// Stops the server and starts it again on the same port with the same database.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.launch()
    }

    /// Registers `local` with `password` through the shared-secret admin API (§4).
    pub fn register(&self, local: &str, password: &str) -> Result<MatrixUser> {
        let path = "/_synapse/admin/v1/register";
        let nonce = self.expect(200, "GET", path, None, None)?;
        let nonce = str_field(&nonce, "nonce")?;
        let mut mac = Hmac::<Sha1>::new_from_slice(SHARED_SECRET.as_bytes())
            .map_err(|e| self.error(format!("HMAC key: {e}"), &Value::Null))?;
        mac.update(format!("{nonce}\0{local}\0{password}\0notadmin").as_bytes());
        let mac: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .fold(String::new(), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            });
        let body = serde_json::json!({
            "nonce": nonce, "username": local, "password": password, "admin": false, "mac": mac,
        });
        let reply = self.expect(200, "POST", path, None, Some(&body))?;
        Ok(MatrixUser {
            user_id: str_field(&reply, "user_id")?,
            access_token: str_field(&reply, "access_token")?,
            device_id: str_field(&reply, "device_id")?,
        })
    }

    /// Logs `local` in as `device_id`; returns the access token.
    pub fn login(&self, local: &str, password: &str, device_id: &str) -> Result<String> {
        let body = serde_json::json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": local},
            "password": password,
            "device_id": device_id,
        });
        let reply = self.expect(200, "POST", "/_matrix/client/v3/login", None, Some(&body))?;
        str_field(&reply, "access_token")
    }

    /// Logs the token's device out.
    pub fn logout(&self, token: &str) -> Result<()> {
        self.expect(
            200,
            "POST",
            "/_matrix/client/v3/logout",
            Some(token),
            Some(&serde_json::json!({})),
        )
        .map(drop)
    }

    /// Creates a private room inviting `invite`; returns its ID.
    pub fn create_room(&self, token: &str, invite: &[&str]) -> Result<String> {
        let body = serde_json::json!({"preset": "private_chat", "invite": invite});
        let reply = self.expect(
            200,
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(token),
            Some(&body),
        )?;
        str_field(&reply, "room_id")
    }

    /// Joins `room_id`.
    pub fn join(&self, token: &str, room_id: &str) -> Result<()> {
        let path = format!("/_matrix/client/v3/join/{}", encode(room_id));
        self.expect(
            200,
            "POST",
            &path,
            Some(token),
            Some(&serde_json::json!({})),
        )
        .map(drop)
    }

    /// A room shared by the two users: `a` creates it, `b` joins.
    pub fn share_room(&self, a: &MatrixUser, b: &MatrixUser) -> Result<String> {
        let room = self.create_room(&a.access_token, &[b.user_id.as_str()])?;
        self.join(&b.access_token, &room)?;
        Ok(room)
    }

    /// `PUT /presence/{user}/status` as `user` (§5).
    pub fn set_presence(
        &self,
        user: &MatrixUser,
        presence: &str,
        status_msg: Option<&str>,
    ) -> Result<()> {
        let mut body = serde_json::json!({"presence": presence});
        if let Some(m) = status_msg {
            body["status_msg"] = Value::String(m.to_owned());
        }
        let path = format!(
            "/_matrix/client/v3/presence/{}/status",
            encode(&user.user_id)
        );
        self.expect(200, "PUT", &path, Some(&user.access_token), Some(&body))
            .map(drop)
    }

    /// `GET /presence/{of}/status` as `token`'s user.
    pub fn presence(&self, token: &str, of: &str) -> Result<Value> {
        let path = format!("/_matrix/client/v3/presence/{}/status", encode(of));
        self.expect(200, "GET", &path, Some(token), None)
    }

    /// One `/sync` as `token`'s user with `set_presence` and a long-poll `timeout_ms`; returns
    /// the answer (its `next_batch` for the next call).
    pub fn sync(
        &self,
        token: &str,
        since: Option<&str>,
        set_presence: &str,
        timeout_ms: u64,
    ) -> Result<Value> {
        let mut path =
            format!("/_matrix/client/v3/sync?set_presence={set_presence}&timeout={timeout_ms}");
        if let Some(since) = since {
            let _ = write!(path, "&since={}", encode(since));
        }
        self.expect(200, "GET", &path, Some(token), None)
    }

    /// Any request; the answer whatever its status.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Answer> {
        http(self.port, method, path, token, body)
    }

    fn expect(
        &self,
        status: u16,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value> {
        let answer = self.request(method, path, token, body)?;
        if answer.status == status {
            Ok(answer.body)
        } else {
            let what = format!(
                "{method} {} answered {}",
                path.split('?').next().unwrap_or(path),
                answer.status
            );
            Err(self.error(what, &answer.body))
        }
    }

    fn error(&self, what: String, body: &Value) -> Error {
        Error::Command {
            what,
            status: "unexpected answer".to_owned(),
            output: format!(
                "{body}\n--- last lines of synapse.log ---\n{}",
                crate::error::tail(&self.log())
            ),
        }
    }

    fn write_config(&self) -> Result<()> {
        let t = self.dir.path();
        let path = |p: &str| t.join(p).to_string_lossy().into_owned();
        let relaxed = "{per_second: 1000, burst_count: 1000}";
        let tls = match &self.tls {
            Some((port, cert)) => format!(
                "  - {{port: {port}, bind_addresses: ['127.0.0.1'], type: http, tls: true, resources: [{{names: [client]}}]}}\n\
                 tls_certificate_path: {}\ntls_private_key_path: {}\n",
                cert.display(),
                cert.with_extension("key").display()
            ),
            None => String::new(),
        };
        let config = format!(
            "# written by imstatus-testkit (matrix-recipe.md §2)\n\
             server_name: {SERVER_NAME}\n\
             report_stats: false\n\
             signing_key_path: {key}\n\
             pid_file: {pid}\n\
             listeners:\n  - {{port: {port}, bind_addresses: ['127.0.0.1'], type: http, tls: false, resources: [{{names: [client]}}]}}\n\
             {tls}\
             database: {{name: sqlite3, args: {{database: {db}}}}}\n\
             media_store_path: {media}\n\
             registration_shared_secret: {SHARED_SECRET}\n\
             enable_registration: false\n\
             bcrypt_rounds: 4\n\
             trusted_key_servers: []\n\
             suppress_key_server_warning: true\n\
             federation_domain_whitelist: []\n\
             presence: {{enabled: {presence}, sync_online_timeout: 5s}}\n\
             caches: {{sync_response_cache_duration: 0}}\n\
             experimental_features: {{msc3026_enabled: true}}\n\
             rc_message: {relaxed}\n\
             rc_presence: {{per_user: {relaxed}}}\n\
             rc_login: {{address: {relaxed}, account: {relaxed}, failed_attempts: {relaxed}}}\n\
             rc_registration: {relaxed}\n\
             rc_joins: {{local: {relaxed}}}\n\
             rc_joins_per_room: {relaxed}\n\
             rc_room_creation: {relaxed}\n\
             rc_invites: {{per_room: {relaxed}, per_user: {relaxed}}}\n",
            key = path("signing.key"),
            pid = path("homeserver.pid"),
            port = self.port,
            db = path("homeserver.db"),
            media = path("media"),
            presence = self.presence,
        );
        std::fs::write(&self.config, config)
            .map_err(|e| Error::io(format!("writing {}", self.config.display()), e))
    }

    /// Spawns Synapse in the foreground and polls `/health`.
    fn launch(&mut self) -> Result<()> {
        let log_start = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| Error::io(format!("opening {}", self.log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io("duplicating Synapse's log", e))?;
        let child = Command::new(&self.python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&self.config)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| Error::io("spawning synapse", e))?;
        let child = self.child.insert(child);
        let port = self.port;
        let log = &self.log;
        let waited = try_wait_until(
            &format!("Synapse to answer /health on 127.0.0.1:{port}"),
            START_DEADLINE,
            || {
                if let Some(status) = child
                    .try_wait()
                    .map_err(|e| Error::io("reaping synapse", e))?
                {
                    let new = log_since(log, log_start);
                    if new.contains("Address already in use") {
                        return Err(Error::Command {
                            what: PORT_TAKEN.into(),
                            status: format!("port {port} in use"),
                            output: new,
                        });
                    }
                    return Err(Error::Exited {
                        what: "synapse".into(),
                        status: status.to_string(),
                        context: String::new(),
                    });
                }
                Ok(http(port, "GET", "/health", None, None)
                    .ok()
                    .filter(|a| a.status == 200)
                    .map(drop))
            },
        );
        if let Err(e) = waited {
            if let Some(mut child) = self.child.take() {
                let _ = kill_child(&mut child, "synapse");
            }
            return Err(e.with_log("synapse.log", &self.log()));
        }
        Ok(())
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        if self.stop().is_err() {
            if let Some(mut child) = self.child.take() {
                let _ = kill_child(&mut child, "synapse");
            }
        }
    }
}

/// A self-signed certificate for `127.0.0.1` and `localhost` (`CA:FALSE`: rustls refuses a CA
/// certificate as a server's own), `server.crt`/`server.key` in `dir`.
fn make_certificate(dir: &Path) -> Result<PathBuf> {
    let openssl = find_program("openssl", "openssl")?;
    let crt = dir.join("server.crt");
    run(
        Command::new(openssl)
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
            ])
            // Not CN=localhost: Debian's snakeoil certificate in /etc/ssl/certs has that name,
            // and a trust anchor of the same name turns "unknown issuer" into "bad signature".
            .args(["-subj", "/CN=imstatus-test-synapse"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(dir.join("server.key"))
            .arg("-out")
            .arg(&crt),
        "openssl req (Synapse certificate)",
    )?;
    Ok(crt)
}

/// The `what` of the internal error that makes [`Synapse::start`] pick another port.
const PORT_TAKEN: &str = "synapse: port taken by another process";

fn str_field(v: &Value, key: &str) -> Result<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Error::Command {
            what: format!("reading `{key}` from Synapse's answer"),
            status: "missing".into(),
            output: v.to_string(),
        })
}

/// Percent-encodes a path segment or query value.
fn encode(text: &str) -> String {
    text.bytes().fold(String::new(), |mut out, b| {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
        out
    })
}

/// Standard base64 without padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// One HTTP/1.1 request to 127.0.0.1:`port` with `Connection: close`.
fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<Answer> {
    let what = format!("{method} {}", path.split('?').next().unwrap_or(path));
    let io = |e| Error::io(what.clone(), e);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(90)))
        .map_err(io)?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    if let Some(token) = token {
        let _ = write!(request, "Authorization: Bearer {token}\r\n");
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(io)?;
    let bad = |why: &str| Error::Command {
        what: what.clone(),
        status: why.to_owned(),
        output: String::from_utf8_lossy(&raw[..raw.len().min(500)]).into_owned(),
    };
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let mut body = raw[split + 4..].to_vec();
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(Answer {
        status,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_unpadded() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg");
        assert_eq!(base64(b"fo"), "Zm8");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff; 32]).len(), 43);
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
            Some(b"abcde".to_vec())
        );
        assert_eq!(dechunk(b"zz\r\n"), None);
    }

    #[test]
    fn a_missing_venv_names_the_install_command() {
        let saved = std::env::var_os("IMSTATUS_SYNAPSE_VENV");
        // Only this test touches the variable in the testkit's own unit tests.
        std::env::set_var("IMSTATUS_SYNAPSE_VENV", "/nonexistent/imstatus-venv");
        let err = Synapse::python()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        match saved {
            Some(v) => std::env::set_var("IMSTATUS_SYNAPSE_VENV", v),
            None => std::env::remove_var("IMSTATUS_SYNAPSE_VENV"),
        }
        assert!(err.contains("/nonexistent/imstatus-venv"), "{err}");
        assert!(err.contains("ensure_synapse"), "{err}");
    }
}
