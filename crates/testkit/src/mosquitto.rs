//! A real mosquitto for the MQTT tests, and a small rumqttc client that watches topics.
//!
//! `Mosquitto` runs the real broker as our child, in its own temporary directory with its own
//! config (one listener on 127.0.0.1, no persistence, everything logged to a file), and stops
//! it by PID (SIGTERM, SIGKILL after a grace period), in `Drop` as well. Readiness is polled
//! with a deadline; a missing `mosquitto` binary is a test failure that names the Debian
//! package, never a skip.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rumqttc::{
    AsyncClient, Event, MqttOptions, NetworkOptions, Packet, QoS, TlsConfiguration, Transport,
};
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long mosquitto gets to start listening, and to exit after SIGTERM.
const BROKER_STEP: Duration = Duration::from_secs(10);

/// TLS material and users for a broker that is not anonymous.
#[derive(Debug, Default, Clone)]
pub struct BrokerOptions {
    /// `certfile`/`keyfile` (PEM) for a TLS listener.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Users and passwords; when set, anonymous clients are refused.
    pub users: Vec<(String, String)>,
}

/// A running mosquitto.
pub struct Mosquitto {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

fn find_program(name: &str) -> PathBuf {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
        "/sbin",
    ] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("`{name}` is not installed: apt-get install mosquitto mosquitto-clients");
}

impl Mosquitto {
    /// An anonymous broker on a free loopback port.
    pub fn start() -> Mosquitto {
        Self::start_on(crate::free_port())
    }

    /// An anonymous broker on `port` (e.g. the port of a broker that was stopped).
    pub fn start_on(port: u16) -> Mosquitto {
        Self::start_with(port, &BrokerOptions::default())
    }

    /// A broker on `port` with TLS and/or users.
    pub fn start_with(port: u16, options: &BrokerOptions) -> Mosquitto {
        let dir = tempfile::Builder::new()
            .prefix("imstatus-mosquitto-")
            .tempdir()
            .unwrap();
        // The log goes to stderr, which is unbuffered (`log_dest file` is block-buffered: its
        // last lines could stay unwritten for as long as the broker runs).
        let mut conf = format!(
            "listener {port} 127.0.0.1\n\
             persistence false\n\
             log_dest stderr\n\
             log_type all\n\
             connection_messages true\n\
             # Run as root (a container), mosquitto would switch to the `mosquitto` user and\n\
             # could not read the files here; as any other user this line has no effect.\n\
             user root\n"
        );
        if let Some((cert, key)) = &options.tls {
            conf.push_str(&format!(
                "certfile {}\nkeyfile {}\n",
                cert.display(),
                key.display()
            ));
        }
        if options.users.is_empty() {
            conf.push_str("allow_anonymous true\n");
        } else {
            let passwd = dir.path().join("passwd");
            for (i, (user, password)) in options.users.iter().enumerate() {
                let mut cmd = Command::new(find_program("mosquitto_passwd"));
                cmd.arg("-b");
                if i == 0 {
                    cmd.arg("-c");
                }
                let status = cmd
                    .arg(&passwd)
                    .arg(user)
                    .arg(password)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .expect("mosquitto_passwd runs");
                assert!(status.success(), "mosquitto_passwd failed");
            }
            conf.push_str(&format!(
                "allow_anonymous false\npassword_file {}\n",
                passwd.display()
            ));
        }
        let conf_path = dir.path().join("mosquitto.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(find_program("mosquitto"))
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("mosquitto.log")).unwrap(),
            ))
            .spawn()
            .expect("mosquitto starts");
        let mut broker = Mosquitto {
            child: Some(child),
            port,
            dir,
        };
        broker.wait_listening();
        broker
    }

    fn wait_listening(&mut self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let log_path = self.dir.path().join("mosquitto.log");
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let child = self.child.as_mut().unwrap();
        // The log says so once the listener is open; a probe connection would be noise.
        let outcome = crate::wait_until("mosquitto to listen", BROKER_STEP, || {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(Err(status));
            }
            log().contains(" running").then_some(Ok(()))
        });
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(status)) => panic!(
                "mosquitto exited ({status}) before listening on {addr}:\n{}",
                log()
            ),
            Err(e) => panic!("{e} ({addr}):\n{}", log()),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The retained message of `topic` on an anonymous plain broker, if any (`mosquitto_sub`,
    /// 1 s at most), for tests without a tokio runtime.
    pub fn retained(&self, topic: &str) -> Option<String> {
        let out = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-t", topic])
            .args(["-C", "1", "-W", "1"])
            .stdin(Stdio::null())
            .output()
            .expect("mosquitto_sub (Debian package `mosquitto-clients`) must be installed");
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (!text.is_empty()).then_some(text)
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Stops the broker by PID: SIGTERM, SIGKILL after 5 s; waits until it is gone and the
    /// port is free again.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGTERM, SIGKILL after half the step; returns once it is gone, then we reap it.
        crate::stop_pid(child.id(), BROKER_STEP / 2).expect("mosquitto stops");
        let _ = child.wait();
        // Nothing may still listen on the port (a restart on it must bind).
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        crate::wait_until("the broker's port to be free", BROKER_STEP, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(100))
                .is_err()
                .then_some(())
        })
        .expect("the port is free");
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = child.wait();
        }
    }
}

/// One message as a subscriber saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: String,
    /// Set for retained messages delivered because of the subscription; clear for live ones.
    pub retain: bool,
}

impl Message {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.payload)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", self.topic, self.payload))
    }
}

/// How a [`Watcher`] reaches the broker.
#[derive(Clone)]
pub struct Connect {
    pub port: u16,
    pub tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    pub host: String,
    pub credentials: Option<(String, String)>,
}

impl Connect {
    pub fn plain(port: u16) -> Connect {
        Connect {
            port,
            tls: None,
            host: "127.0.0.1".to_owned(),
            credentials: None,
        }
    }
}

/// A test's own MQTT client: subscribes to some filters and records every message.
pub struct Watcher {
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Message>,
    /// The latest message of each topic.
    pub latest: HashMap<String, Message>,
    /// Every message, in arrival order.
    pub all: Vec<Message>,
    task: JoinHandle<()>,
}

static NEXT_WATCHER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Watcher {
    /// Connects to the plain broker on `port` and subscribes to `filters`.
    pub async fn connect(port: u16, filters: &[&str]) -> Watcher {
        Self::connect_with(Connect::plain(port), filters).await
    }

    /// Connects and subscribes; returns once the broker acknowledged the subscription.
    pub async fn connect_with(how: Connect, filters: &[&str]) -> Watcher {
        let n = NEXT_WATCHER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("watcher-{}-{n}", std::process::id());
        let mut options = MqttOptions::new(id, how.host.clone(), how.port);
        options.set_max_packet_size(1 << 20, 1 << 20);
        if let Some((user, password)) = &how.credentials {
            options.set_credentials(user.clone(), password.clone());
        }
        if let Some(tls) = &how.tls {
            options.set_transport(Transport::Tls(TlsConfiguration::Rustls(tls.clone())));
        }
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let (tx, rx) = mpsc::unbounded_channel();
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        for filter in filters {
            client
                .subscribe(*filter, QoS::AtLeastOnce)
                .await
                .expect("queue subscribe");
        }
        let expected_acks = filters.len();
        let task = tokio::spawn(async move {
            let mut acks = 0;
            let mut subscribed_tx = Some(subscribed_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) if expected_acks == 0 => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        acks += 1;
                        if acks == expected_acks {
                            if let Some(tx) = subscribed_tx.take() {
                                let _ = tx.send(Ok(()));
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(Message {
                            topic: p.topic.clone(),
                            payload: String::from_utf8_lossy(&p.payload).into_owned(),
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(e) => {
                        // A watcher never reconnects: a test that restarts the broker makes a
                        // new one.
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(Err(e.to_string()));
                        }
                        return;
                    }
                }
            }
        });
        tokio::time::timeout(BROKER_STEP, subscribed_rx)
            .await
            .expect("the watcher subscribes in time")
            .expect("the watcher task runs")
            .expect("the watcher connects and subscribes");
        Watcher {
            client,
            rx,
            latest: HashMap::new(),
            all: Vec::new(),
            task,
        }
    }

    fn record(&mut self, m: Message) {
        self.latest.insert(m.topic.clone(), m.clone());
        self.all.push(m);
    }

    /// Takes in what has arrived so far without waiting.
    pub fn drain(&mut self) {
        while let Ok(m) = self.rx.try_recv() {
            self.record(m);
        }
    }

    /// Reads messages until `f` (over everything seen so far) returns `Some`, or panics after
    /// `d` naming `what`.
    pub async fn until<T>(
        &mut self,
        what: &str,
        d: Duration,
        mut f: impl FnMut(&Watcher) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            self.drain();
            if let Some(v) = f(self) {
                return v;
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => self.record(m),
                Ok(None) => panic!("the watcher lost the broker while waiting for {what}"),
                Err(_) => panic!(
                    "timed out after {d:?} waiting for {what}; latest: {:#?}",
                    self.latest_sorted()
                ),
            }
        }
    }

    /// Waits until `topic`'s latest payload is `payload`; returns that message.
    pub async fn value(&mut self, topic: &str, payload: &str, d: Duration) -> Message {
        self.until(&format!("{topic} = {payload}"), d, |w| {
            w.latest
                .get(topic)
                .filter(|m| m.payload == payload)
                .cloned()
        })
        .await
    }

    /// The latest payload of `topic`, if any.
    pub fn payload(&self, topic: &str) -> Option<&str> {
        self.latest.get(topic).map(|m| m.payload.as_str())
    }

    pub fn latest_sorted(&self) -> Vec<(&str, &str, bool)> {
        let mut v: Vec<_> = self
            .latest
            .values()
            .map(|m| (m.topic.as_str(), m.payload.as_str(), m.retain))
            .collect();
        v.sort();
        v
    }

    /// Publishes (e.g. Home Assistant's birth message).
    pub async fn publish(&self, topic: &str, payload: &str, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .expect("queue publish");
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
