//! The cluster roles as real processes: a 3-node JetStream cluster (testkit), a real Prosody,
//! `imstatus serve --role gateway` and several `imstatus serve --role watcher`. One watcher
//! owns the account; `kill -9` of it moves the account to the standby within lease + 3 s and
//! the gateway ends on the last status sent; a SIGSTOPped owner whose lease moved on cannot
//! write when it wakes up. `PUT …/status` on the gateway is 503 without an owner and reaches
//! the owner's source once there is one; `imstatus doctor` says who owns the account; the
//! gateway's MQTT bridge publishes what the cluster shows. Two gateways stream the same events
//! with the same ids, and a gateway killed and started again resumes its SSE client by
//! `Last-Event-ID` with exactly the events it missed; their `/metrics` name the lease holder.
//! Six flapping accounts with a contact each, shared by two watchers and shown by two
//! gateways: `kill -9` of the watcher holding most leases loses nothing — both gateways end on
//! every last status and each SSE client's stream is in order, gap-free and folds to it.
//! Without `[cluster]` (or without the cargo feature) a role is a usage error. Every process
//! is stopped by PID when its guard drops.

/// Without `[cluster]`, or in a build without the feature, `--role watcher|gateway` is exit 2
/// with a one-line reason, and no source starts.
#[test]
fn a_role_without_a_cluster_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "[[account]]\nname = \"desktop\"\nsource = \"purple\"\nbus = \"unix:path=/nonexistent\"\n",
    )
    .expect("write config");
    for role in ["watcher", "gateway"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_imstatus"))
            .env_remove("IMSTATUS_CONFIG")
            .arg("--config")
            .arg(&path)
            .args(["serve", "--role", role])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run imstatus");
        assert_eq!(out.status.code(), Some(2), "{role}");
        let err = String::from_utf8_lossy(&out.stderr);
        #[cfg(feature = "cluster")]
        let want = "imstatus: serve: --role watcher and --role gateway need a [cluster] section in the config (docs/cluster.md)\n";
        #[cfg(not(feature = "cluster"))]
        let want = "imstatus: serve: this build of imstatus has no cluster roles (built without its cargo feature `cluster`)\n";
        assert_eq!(err, want, "{role}");
    }
}

#[cfg(feature = "cluster")]
mod processes {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use imstatus_testkit::{
        free_port, http_get as get, mosquitto::Mosquitto, wait_until, NatsCluster, NatsOptions,
        Prosody, ProsodyOptions, ServeProcess, XmppClient,
    };
    use nix::sys::signal::Signal;

    /// The lease the test configures (the shortest the config accepts).
    const LEASE: Duration = Duration::from_secs(2);
    const STEP: Duration = Duration::from_secs(20);

    /// A running `imstatus serve`, killed by PID on drop.
    struct Proc(ServeProcess);

    impl Proc {
        fn start(config: &Path, role: &str, log: PathBuf) -> Proc {
            let imstatus = Path::new(env!("CARGO_BIN_EXE_imstatus"));
            Proc(ServeProcess::start(imstatus, config, role, log).expect("spawn imstatus"))
        }

        fn log(&self) -> String {
            self.0.log()
        }

        fn pid(&self) -> u32 {
            self.0.pid()
        }

        fn signal(&self, s: Signal) {
            self.0.signal(s).expect("signal");
        }

        fn holds_a_lease(&self) -> bool {
            self.log().contains("lease taken")
        }
    }

    /// The config file `file` in `dir`: alice on Prosody at `xmpp`, the gateway on `http`,
    /// MQTT when `mqtt` names a broker.
    fn config(
        dir: &Path,
        file: &str,
        nats: &NatsCluster,
        (xmpp, http): (u16, u16),
        mqtt: Option<&str>,
    ) -> PathBuf {
        let pw = dir.join("alice.pw");
        std::fs::write(&pw, "alicepw\n").expect("write password");
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let path = dir.join(file);
        let mqtt = mqtt.map_or(String::new(), |url| format!("[mqtt]\nurl = \"{url}\"\n"));
        std::fs::write(
            &path,
            format!(
                "[[account]]\nname = \"alice\"\nsource = \"xmpp\"\njid = \"alice@example.test\"\n\
                 password_file = \"{}\"\nserver = \"127.0.0.1:{xmpp}\"\ntls = \"insecure-plaintext\"\n\
                 [serve]\nlisten = \"127.0.0.1:{http}\"\ntokenless_write = true\n{mqtt}\
                 [cluster]\nurl = \"{}\"\nname = \"t\"\nshards = 4\nlease = \"{}s\"\n",
                pw.display(),
                nats.urls(),
                LEASE.as_secs()
            ),
        )
        .expect("write config");
        path
    }

    /// `GET /v1/accounts/alice` on the gateway: (session, availability, message).
    fn alice(http: u16) -> Option<(String, String, String)> {
        let body = get(http, "/v1/accounts/alice")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let v = v.get("snapshot").cloned().unwrap_or(v);
        let f = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
        Some((f("session"), f("availability"), f("message")))
    }

    /// `PUT /v1/accounts/alice/status` on the gateway: (HTTP status, body); `None` while the
    /// gateway does not answer.
    fn put_status(http: u16, availability: &str, message: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", http)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
        let body = format!(r#"{{"availability":"{availability}","message":"{message}"}}"#);
        write!(
            s,
            "PUT /v1/accounts/alice/status HTTP/1.0\r\nHost: 127.0.0.1:{http}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .ok()?;
        let mut text = String::new();
        s.take(1 << 20).read_to_string(&mut text).ok()?;
        let code = text.split(' ').nth(1)?.parse().ok()?;
        Some((code, text.split_once("\r\n\r\n")?.1.to_owned()))
    }

    /// `imstatus doctor` on the config: (exit code, stdout).
    fn doctor(config: &Path) -> (Option<i32>, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_imstatus"))
            .env_remove("IMSTATUS_CONFIG")
            .arg("--config")
            .arg(config)
            .arg("doctor")
            .stdin(Stdio::null())
            .output()
            .expect("run imstatus doctor");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// One Server-Sent Event: (`id`, `event`, `data`).
    type Frame = (String, String, String);

    /// An SSE stream of `/v1/events` (HTTP/1.0: the body is the events as they come).
    struct Sse {
        reader: std::io::BufReader<TcpStream>,
    }

    impl Sse {
        /// Opens the stream, resuming after `last_id` when given.
        fn open(http: u16, last_id: Option<&str>) -> Sse {
            let mut s = TcpStream::connect(("127.0.0.1", http)).expect("connect");
            s.set_read_timeout(Some(STEP)).expect("timeout");
            let resume = last_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
            write!(
                s,
                "GET /v1/events HTTP/1.0\r\nHost: 127.0.0.1:{http}\r\n\
                 Accept: text/event-stream\r\n{resume}\r\n"
            )
            .expect("request");
            Sse {
                reader: std::io::BufReader::new(s),
            }
        }

        /// The events up to and including the first whose data contains `marker`, within
        /// [`STEP`].
        fn until(&mut self, marker: &str) -> Vec<Frame> {
            use std::io::BufRead;
            let deadline = Instant::now() + STEP;
            let mut frames = Vec::new();
            let mut frame = Frame::default();
            loop {
                assert!(
                    Instant::now() < deadline,
                    "no event with {marker} within {STEP:?}; read {frames:#?}"
                );
                let mut line = String::new();
                let n = self
                    .reader
                    .read_line(&mut line)
                    .unwrap_or_else(|e| panic!("SSE: {e}; read {frames:#?}"));
                assert!(n > 0, "the SSE stream ended; read {frames:#?}");
                let line = line.trim_end_matches(['\r', '\n']);
                if line.is_empty() {
                    // The end of a block; comment-only blocks (keep-alives) carry no data.
                    if !frame.2.is_empty() {
                        let done = frame.2.contains(marker);
                        frames.push(std::mem::take(&mut frame));
                        if done {
                            return frames;
                        }
                    }
                } else if let Some((k, v)) = line.split_once(':') {
                    let v = v.strip_prefix(' ').unwrap_or(v).to_owned();
                    match k {
                        "id" => frame.0 = v,
                        "event" => frame.1 = v,
                        "data" => frame.2 = v,
                        _ => {}
                    }
                }
            }
        }
    }

    fn shows(http: u16, availability: &str, message: &str) -> bool {
        alice(http)
            == Some((
                "signed_in".to_owned(),
                availability.to_owned(),
                message.to_owned(),
            ))
    }

    #[test]
    fn kill_9_moves_the_account_within_the_lease_and_a_stopped_owner_cannot_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nats = NatsCluster::start(3).expect("nats");
        let prosody = Prosody::start(ProsodyOptions::default()).expect("prosody");
        let http = free_port();
        let broker = Mosquitto::start();
        let cfg = config(
            dir.path(),
            "config.toml",
            &nats,
            (prosody.port(), http),
            Some(&broker.url()),
        );
        let gateway = Proc::start(&cfg, "gateway", dir.path().join("gateway.log"));
        // No watcher yet: a write has no owner to go to, and says so at once.
        let (code, body) = wait_until("the gateway to answer a PUT", STEP, || {
            put_status(http, "busy", "nobody owns me")
        })
        .unwrap_or_else(|e| panic!("{e}\ngateway: {}", gateway.log()));
        assert_eq!(code, 503, "{body}");
        let error: serde_json::Value = serde_json::from_str(&body).expect("json error");
        assert_eq!(error["error"], "server_unreachable", "{body}");
        assert!(
            error["detail"]
                .as_str()
                .is_some_and(|d| d.contains("no watcher owns `alice`")),
            "{body}"
        );
        // The doctor says the cluster is there and that nobody owns the account.
        let (code, out) = doctor(&cfg);
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("cluster (t)\n  ok   cluster "), "{out}");
        assert!(out.contains("  ok   stream "), "{out}");
        assert!(
            out.contains("  FAIL lease      alice: no watcher owns shard"),
            "{out}"
        );
        let w1 = Proc::start(&cfg, "watcher", dir.path().join("w1.log"));
        let w2 = Proc::start(&cfg, "watcher", dir.path().join("w2.log"));
        let mut desk =
            XmppClient::connect(prosody.port(), "alice", "example.test", "alicepw", "desk")
                .expect("alice's desk client");
        desk.presence(Some("away"), Some("lunch"), Some(5))
            .expect("presence");
        wait_until("the gateway to show away/lunch", STEP, || {
            shows(http, "away", "lunch").then_some(())
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e}\ngateway: {}\nw1: {}\nw2: {}",
                gateway.log(),
                w1.log(),
                w2.log()
            )
        });
        // The gateway's MQTT bridge publishes what the cluster shows (the watchers run none).
        wait_until("the gateway to publish away over MQTT", STEP, || {
            broker
                .retained("imstatus/alice/availability")
                .filter(|a| a == "away")
        })
        .unwrap_or_else(|e| panic!("{e}\ngateway: {}", gateway.log()));
        // Exactly one watcher owns the account; the other stands by (it keeps trying to claim).
        let (owner, standby) = wait_until("one watcher to hold the lease", STEP, || {
            match (w1.holds_a_lease(), w2.holds_a_lease()) {
                (true, false) => Some((&w1, &w2)),
                (false, true) => Some((&w2, &w1)),
                _ => None,
            }
        })
        .expect("one owner");
        // A write through the gateway reaches the owner's XMPP source: alice's other client
        // receives the presence it sends.
        let (code, body) = wait_until("a PUT through the gateway to reach the owner", STEP, || {
            put_status(http, "busy", "set through the cluster").filter(|(c, _)| *c != 503)
        })
        .unwrap_or_else(|e| panic!("{e}\nowner: {}", owner.log()));
        assert_eq!(code, 204, "{body}");
        desk.read_until("set through the cluster", STEP)
            .expect("the owner's presence reaches alice's desk");
        let (code, out) = doctor(&cfg);
        assert_eq!(code, Some(0), "{out}");
        assert!(
            out.contains("  ok   lease      alice: shard ") && out.contains("owned by watcher"),
            "{out}"
        );
        // For a whole lease and more (several renewals), the standby never gets it.
        let taken = wait_until("the standby to take the lease", LEASE + LEASE / 2, || {
            standby.holds_a_lease().then_some(())
        });
        assert!(taken.is_err(), "standby: {}", standby.log());

        // kill -9 of the owner: the standby takes over after the lease and ends on the last
        // status sent.
        owner.signal(Signal::SIGKILL);
        let killed = Instant::now();
        desk.presence(Some("dnd"), Some("meeting"), Some(5))
            .expect("presence");
        wait_until(
            "the standby to take over and show busy/meeting",
            LEASE + Duration::from_secs(3),
            || (standby.holds_a_lease() && shows(http, "busy", "meeting")).then_some(()),
        )
        .unwrap_or_else(|e| panic!("{e}\nstandby: {}", standby.log()));
        eprintln!("takeover after kill -9: {:?}", killed.elapsed());
        wait_until("MQTT to follow the takeover", STEP, || {
            broker
                .retained("imstatus/alice/availability")
                .filter(|a| a == "busy")
        })
        .expect("busy over MQTT");

        // SIGSTOP the new owner; a third watcher takes over after the lease.
        let stale = standby;
        stale.signal(Signal::SIGSTOP);
        let w3 = Proc::start(&cfg, "watcher", dir.path().join("w3.log"));
        let stopped = Instant::now();
        desk.presence(Some("xa"), Some("gone"), Some(5))
            .expect("presence");
        wait_until(
            "w3 to take over from the stopped owner",
            LEASE + Duration::from_secs(5),
            || (w3.holds_a_lease() && shows(http, "extended_away", "gone")).then_some(()),
        )
        .unwrap_or_else(|e| panic!("{e}\nw3: {}", w3.log()));
        eprintln!("takeover from a SIGSTOPped owner: {:?}", stopped.elapsed());
        // The stale owner wakes up with its old lease and a connection that saw everything: it
        // finds its lease gone (or its write fenced) and stops its sources.
        stale.signal(Signal::SIGCONT);
        wait_until("the woken owner to drop the account", STEP, || {
            let log = stale.log();
            (log.contains("lease lost") || log.contains("fenced")).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}\nstale: {}", stale.log()));
        desk.presence(Some("chat"), Some("back"), Some(5))
            .expect("presence");
        wait_until("the gateway to follow w3", STEP, || {
            shows(http, "chatty", "back").then_some(())
        })
        .expect("chat/back");
        assert!(w3.log().contains("lease taken"));
        assert_eq!(
            stale.log().matches("lease taken").count(),
            1,
            "{}",
            stale.log()
        );
        desk.close().expect("close");
    }

    /// Two gateways stream the same events with the same ids; a gateway killed mid-stream and
    /// started again resumes its client by `Last-Event-ID` with exactly the events it missed
    /// (what the other gateway's client saw meanwhile), then goes on live.
    #[test]
    fn a_restarted_gateway_resumes_its_clients_by_last_event_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nats = NatsCluster::start(3).expect("nats");
        let prosody = Prosody::start(ProsodyOptions::default()).expect("prosody");
        let (h1, h2) = (free_port(), free_port());
        let cfg1 = config(dir.path(), "g1.toml", &nats, (prosody.port(), h1), None);
        let cfg2 = config(dir.path(), "g2.toml", &nats, (prosody.port(), h2), None);
        let g1 = Proc::start(&cfg1, "gateway", dir.path().join("g1.log"));
        let g2 = Proc::start(&cfg2, "gateway", dir.path().join("g2.log"));
        let w = Proc::start(&cfg1, "watcher", dir.path().join("w.log"));
        let mut desk =
            XmppClient::connect(prosody.port(), "alice", "example.test", "alicepw", "desk")
                .expect("alice's desk client");
        desk.presence(Some("away"), Some("step-one"), Some(5))
            .expect("presence");
        for http in [h1, h2] {
            wait_until("both gateways to show step-one", STEP, || {
                shows(http, "away", "step-one").then_some(())
            })
            .unwrap_or_else(|e| panic!("{e}\ngateway: {}\nwatcher: {}", g1.log(), w.log()));
        }
        let mut a = Sse::open(h1, None);
        let mut b = Sse::open(h2, None);
        a.until("step-one");
        b.until("step-one");
        desk.presence(Some("dnd"), Some("step-two"), Some(5))
            .expect("presence");
        let seen_a = a.until("step-two");
        let seen_b = b.until("step-two");
        assert_eq!(
            seen_a, seen_b,
            "both gateways stream the same events, same ids"
        );
        let last = seen_a.last().expect("an event").0.clone();

        // kill -9 of the first gateway; alice goes on changing while it is down.
        g1.signal(Signal::SIGKILL);
        drop(a);
        drop(g1);
        desk.presence(Some("xa"), Some("step-three"), Some(5))
            .expect("presence");
        desk.presence(Some("chat"), Some("step-four"), Some(5))
            .expect("presence");
        let missed = b.until("step-four");
        assert!(missed.len() >= 2, "{missed:#?}");

        // Started again on the same port, it replays exactly what its client missed.
        let g1 = Proc::start(&cfg1, "gateway", dir.path().join("g1-again.log"));
        wait_until("the restarted gateway to show step-four", STEP, || {
            shows(h1, "chatty", "step-four").then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}\ngateway: {}", g1.log()));
        let mut resumed = Sse::open(h1, Some(&last));
        let replayed = resumed.until("step-four");
        assert_eq!(
            replayed, missed,
            "the resumed client gets exactly what it missed"
        );
        assert!(
            replayed.iter().all(|f| !f.2.contains("\"resync\":true")),
            "{replayed:#?}"
        );
        // And both go on live with the same ids.
        desk.presence(None, Some("step-five"), Some(5))
            .expect("presence");
        assert_eq!(resumed.until("step-five"), b.until("step-five"));
        // Each gateway's /metrics names the watcher holding alice's shard and has caught up
        // with the stream.
        for http in [h1, h2] {
            wait_until("the gateway's cluster metrics", STEP, || {
                get(http, "/metrics").filter(|m| {
                    m.contains("\nimstatus_cluster_leases{watcher=\"")
                        && m.contains("\nimstatus_cluster_shards_unowned 0\n")
                        && m.contains("\nimstatus_cluster_stream_lag 0\n")
                })
            })
            .unwrap_or_else(|e| panic!("{e}\n{:?}", get(http, "/metrics")));
        }
        drop((g1, g2, w));
        desk.close().expect("close");
    }

    /// How many accounts the flap test watches; each has one contact.
    const MANY: usize = 6;

    /// The config file `file` in `dir` for the flap test: accounts `u0`…, each tracking its
    /// contact `c<i>`, eight shards, the gateway on `http`.
    fn many_config(dir: &Path, file: &str, nats: &NatsCluster, xmpp: u16, http: u16) -> PathBuf {
        let mut text = String::new();
        for i in 0..MANY {
            let pw = dir.join(format!("u{i}.pw"));
            std::fs::write(&pw, format!("u{i}pw\n")).expect("write password");
            std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            text.push_str(&format!(
                "[[account]]\nname = \"u{i}\"\nsource = \"xmpp\"\njid = \"u{i}@example.test\"\n\
                 password_file = \"{}\"\nserver = \"127.0.0.1:{xmpp}\"\n\
                 tls = \"insecure-plaintext\"\ncontacts = true\n",
                pw.display()
            ));
        }
        text.push_str(&format!(
            "[serve]\nlisten = \"127.0.0.1:{http}\"\n\
             [cluster]\nurl = \"{}\"\nname = \"t\"\nshards = 8\nlease = \"{}s\"\n",
            nats.urls(),
            LEASE.as_secs()
        ));
        let path = dir.join(file);
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// The gateway's snapshot of `account` as `GET /v1/accounts/{account}` gives it.
    fn snapshot_of(http: u16, account: &str) -> Option<imstatus_core::Snapshot> {
        let body = get(http, &format!("/v1/accounts/{account}"))?;
        let event: imstatus_core::Event = serde_json::from_str(&body).ok()?;
        event.snapshot().cloned()
    }

    /// What the flap test last sent for account `i`: its desk's and its contact's status.
    fn last_sent(i: usize, round: &str) -> [(imstatus_core::Availability, String); 2] {
        use imstatus_core::Availability::{Away, Busy};
        [
            (Busy, format!("u{i}-{round}")),
            (Away, format!("c{i}-{round}")),
        ]
    }

    /// Whether `s` shows account `i` as last sent: signed in, the desk's status, the contact's.
    fn matches(s: &imstatus_core::Snapshot, i: usize, round: &str) -> bool {
        use imstatus_core::Session;
        let [(a, m), (ca, cm)] = last_sent(i, round);
        s.session == Session::SignedIn
            && s.availability == a
            && s.message.as_deref() == Some(m.as_str())
            && s.contacts.len() == 1
            && s.contacts[0].contact.as_str() == format!("c{i}@example.test")
            && s.contacts[0].availability == ca
            && s.contacts[0].message.as_deref() == Some(cm.as_str())
    }

    /// Who holds how many of the gateway's shards, by watcher pid, from its `/metrics`; and
    /// the shards no one holds.
    fn leases_by_pid(http: u16) -> Option<(Vec<(u32, usize)>, usize)> {
        let metrics = get(http, "/metrics")?;
        let mut held = Vec::new();
        let mut unowned = None;
        for line in metrics.lines() {
            if let Some(rest) = line.strip_prefix("imstatus_cluster_leases{watcher=\"") {
                let (id, count) = rest.split_once("\"} ")?;
                let pid = id.rsplit('-').nth(1)?.parse().ok()?;
                held.push((pid, count.parse().ok()?));
            } else if let Some(n) = line.strip_prefix("imstatus_cluster_shards_unowned ") {
                unowned = n.parse().ok();
            }
        }
        held.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
        Some((held, unowned?))
    }

    /// An SSE client of `/v1/events` on `http` that keeps every event it reads, parsed, in the
    /// order read, until dropped.
    struct Collector {
        events: std::sync::Arc<std::sync::Mutex<Vec<imstatus_core::Event>>>,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
        reader: Option<std::thread::JoinHandle<()>>,
    }

    impl Collector {
        fn start(http: u16) -> Collector {
            use std::io::BufRead;
            use std::sync::atomic::Ordering;
            let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let mut s = TcpStream::connect(("127.0.0.1", http)).expect("connect");
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            write!(
                s,
                "GET /v1/events HTTP/1.0\r\nHost: 127.0.0.1:{http}\r\nAccept: text/event-stream\r\n\r\n"
            )
            .expect("request");
            let (out, done) = (events.clone(), stop.clone());
            let reader = std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(s);
                let mut line = String::new();
                while !done.load(Ordering::Relaxed) {
                    // A timeout leaves what was read of the line in `line`: read on.
                    match reader.read_line(&mut line) {
                        Ok(0) => break,
                        Ok(_) if line.ends_with('\n') => {}
                        Ok(_) | Err(_) => continue,
                    }
                    if let Some(data) = line.strip_prefix("data: ") {
                        let event = serde_json::from_str(data.trim_end())
                            .unwrap_or_else(|e| panic!("an unreadable event {data}: {e}"));
                        out.lock().expect("events").push(event);
                    }
                    line.clear();
                }
            });
            Collector {
                events,
                stop,
                reader: Some(reader),
            }
        }

        fn events(&self) -> Vec<imstatus_core::Event> {
            self.events.lock().expect("events").clone()
        }
    }

    impl Drop for Collector {
        fn drop(&mut self) {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            if let Some(r) = self.reader.take() {
                let _ = r.join();
            }
        }
    }

    /// Checks one client's stream against the ordering contract and folds it: changes come
    /// with strictly increasing seqs, above every earlier seq; every change starts from what
    /// the client's fold shows (its `from` is the folded state: no silent gap); returns each
    /// account's fold and how many `resync: true` snapshots came.
    fn fold(
        events: &[imstatus_core::Event],
    ) -> (
        std::collections::BTreeMap<String, imstatus_core::Snapshot>,
        usize,
    ) {
        use imstatus_core::{EventKind, Status};
        let mut state = std::collections::BTreeMap::<String, imstatus_core::Snapshot>::new();
        let mut resyncs = 0;
        let mut last_seq = 0;
        for (n, e) in events.iter().enumerate() {
            let at = || {
                format!(
                    "event {n}: {}",
                    serde_json::to_string(e).unwrap_or_default()
                )
            };
            if let EventKind::Snapshot { snapshot, resync } = &e.kind {
                resyncs += usize::from(*resync);
                state.insert(e.account.to_string(), (**snapshot).clone());
                last_seq = last_seq.max(e.seq);
                continue;
            }
            assert!(e.seq > last_seq, "seq {} after {last_seq}: {}", e.seq, at());
            last_seq = e.seq;
            let s = state
                .get_mut(e.account.as_str())
                .unwrap_or_else(|| panic!("a change before the account's snapshot: {}", at()));
            match &e.kind {
                EventKind::StatusChanged { from, .. } => {
                    let folded = Status {
                        availability: s.availability,
                        message: s.message.clone(),
                    };
                    assert_eq!(*from, folded, "{}", at());
                }
                EventKind::ContactStatusChanged { contact, from, .. } => {
                    let folded = s
                        .contacts
                        .iter()
                        .find(|c| c.contact == *contact)
                        .map_or(Status::UNKNOWN, imstatus_core::Contact::status);
                    assert_eq!(*from, folded, "{}", at());
                }
                EventKind::ResourceChanged { resource, from, .. } => {
                    let folded = s.resources.iter().find(|r| r.resource == *resource);
                    assert_eq!(from.as_ref(), folded, "{}", at());
                }
                _ => {}
            }
            s.apply(&e.kind, e.time);
        }
        (state, resyncs)
    }

    /// The issue's flap test: six accounts with a contact each, two watchers sharing their
    /// shards, two gateways with an SSE client each. While every account's desk and contact
    /// keep changing status, the watcher holding most leases is killed with `kill -9`: the
    /// other holds every shard within lease + 3 s; once the flapping stops, both gateways show
    /// each account's and contact's last status, and each client's stream — checked event by
    /// event — never repeats or reorders a seq and folds to that same state.
    #[test]
    fn kill_9_amid_flapping_accounts_loses_nothing_on_either_gateway() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nats = NatsCluster::start(3).expect("nats");
        let pair = |a: String, b: String| (a, b);
        let mut users = Vec::new();
        let mut both = Vec::new();
        for i in 0..MANY {
            users.push(pair(format!("u{i}"), format!("u{i}pw")));
            users.push(pair(format!("c{i}"), format!("c{i}pw")));
            both.push(pair(format!("u{i}"), format!("c{i}")));
        }
        let prosody = Prosody::start(ProsodyOptions {
            users,
            both,
            ..ProsodyOptions::default()
        })
        .expect("prosody");
        let (h1, h2) = (free_port(), free_port());
        let cfg1 = many_config(dir.path(), "g1.toml", &nats, prosody.port(), h1);
        let cfg2 = many_config(dir.path(), "g2.toml", &nats, prosody.port(), h2);
        let g1 = Proc::start(&cfg1, "gateway", dir.path().join("g1.log"));
        let g2 = Proc::start(&cfg2, "gateway", dir.path().join("g2.log"));
        let w1 = Proc::start(&cfg1, "watcher", dir.path().join("w1.log"));
        let w2 = Proc::start(&cfg1, "watcher", dir.path().join("w2.log"));
        let logs = || {
            format!(
                "g1: {}\ng2: {}\nw1: {}\nw2: {}",
                g1.log(),
                g2.log(),
                w1.log(),
                w2.log()
            )
        };
        // Every account's desk (priority 5, over imstatus's own session) and its contact.
        let mut clients = Vec::new();
        for i in 0..MANY {
            let desk = XmppClient::connect(
                prosody.port(),
                &format!("u{i}"),
                "example.test",
                &format!("u{i}pw"),
                "desk",
            )
            .expect("desk client");
            let contact = XmppClient::connect(
                prosody.port(),
                &format!("c{i}"),
                "example.test",
                &format!("c{i}pw"),
                "phone",
            )
            .expect("contact client");
            clients.push((desk, contact));
        }
        let send = |clients: &mut Vec<(XmppClient, XmppClient)>, i: usize, round: &str| {
            let [(_, m), (_, cm)] = last_sent(i, round);
            let (desk, contact) = &mut clients[i];
            desk.presence(Some("dnd"), Some(&m), Some(5)).expect("desk");
            contact
                .presence(Some("away"), Some(&cm), None)
                .expect("contact");
        };
        for i in 0..MANY {
            send(&mut clients, i, "start");
        }
        // Both watchers hold leases (they share the shards) and both gateways show everything.
        let (shares, _) = wait_until("the two watchers to share the shards", STEP, || {
            leases_by_pid(h1).filter(|(held, unowned)| held.len() == 2 && *unowned == 0)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
        for http in [h1, h2] {
            wait_until("a gateway to show every account", STEP, || {
                (0..MANY)
                    .all(|i| {
                        snapshot_of(http, &format!("u{i}")).is_some_and(|s| matches(&s, i, "start"))
                    })
                    .then_some(())
            })
            .unwrap_or_else(|e| {
                let body = get(http, "/v1/accounts").unwrap_or_default();
                let m = get(http, "/metrics").unwrap_or_default();
                let m: Vec<&str> = m.lines().filter(|l| l.contains("cluster")).collect();
                panic!("{e}\n{body}\n{m:#?}\n{}", logs())
            });
        }
        let clients_a = Collector::start(h1);
        let clients_b = Collector::start(h2);

        // Flap: round r changes account r mod 6's desk and contact; each round waits for
        // the contact to see the desk's new status (Prosody's own round trip), so the rounds
        // go at the server's pace. The watcher with most leases is killed at round 60.
        let owner = shares[0].0;
        let (victim, survivor) = if w1.pid() == owner {
            (&w1, &w2)
        } else {
            (&w2, &w1)
        };
        assert_eq!(victim.pid(), owner, "{shares:?}");
        let mut killed = None;
        let mut took = None;
        let mut round = 0usize;
        while took.is_none() || round < 400 {
            let i = round % MANY;
            send(&mut clients, i, &format!("r{round}"));
            clients[i]
                .1
                .read_until(&format!("u{i}-r{round}"), STEP)
                .expect("the contact sees the desk's change");
            if round == 60 {
                victim.signal(Signal::SIGKILL);
                killed = Some(Instant::now());
            }
            if let Some(at) = killed.filter(|_| took.is_none() && round % 10 == 0) {
                if leases_by_pid(h1).is_some_and(|(held, unowned)| {
                    held.len() == 1 && held[0].0 == survivor.pid() && unowned == 0
                }) {
                    took = Some(at.elapsed());
                }
                assert!(
                    at.elapsed() < LEASE + Duration::from_secs(3),
                    "no takeover within lease + 3 s\n{}",
                    logs()
                );
            }
            round += 1;
            assert!(round < 20_000, "the flapping did not end\n{}", logs());
        }
        eprintln!(
            "{round} rounds; shares before the kill {shares:?}; the survivor held every shard {took:?} after the kill"
        );
        for i in 0..MANY {
            send(&mut clients, i, "final");
        }
        for http in [h1, h2] {
            wait_until("a gateway to show every final status", STEP, || {
                (0..MANY)
                    .all(|i| {
                        snapshot_of(http, &format!("u{i}")).is_some_and(|s| matches(&s, i, "final"))
                    })
                    .then_some(())
            })
            .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
        }
        for client in [&clients_a, &clients_b] {
            let (state, resyncs) = wait_until("a client to fold to the final state", STEP, || {
                let (state, resyncs) = fold(&client.events());
                (0..MANY)
                    .all(|i| {
                        state
                            .get(&format!("u{i}"))
                            .is_some_and(|s| matches(s, i, "final"))
                    })
                    .then_some((state, resyncs))
            })
            .unwrap_or_else(|e| panic!("{e}\n{:#?}", fold(&client.events()).0));
            eprintln!(
                "a client read {} events, {resyncs} resync snapshot(s), {} accounts",
                client.events().len(),
                state.len()
            );
        }
        drop((clients_a, clients_b));
        for (desk, contact) in clients {
            desk.close().expect("close");
            contact.close().expect("close");
        }
        drop((g1, g2, w1, w2));
    }

    /// NATS that requires a password, and a config with the wrong one: `serve --role watcher`
    /// and `--role gateway` exit 1 at once with `auth_failed` and a hint naming `[cluster]`,
    /// `imstatus doctor` fails its `cluster` check the same way; the password is in neither.
    #[test]
    fn a_refused_cluster_login_says_the_code_and_what_to_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nats = NatsCluster::start_with(
            3,
            NatsOptions {
                user: Some(("watcher".into(), "right-nats-pw".into())),
                tls: false,
                ..NatsOptions::default()
            },
        )
        .expect("nats with a password");
        let pw = dir.path().join("nats.pw");
        std::fs::write(&pw, "wrong-nats-pw\n").expect("write password");
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let cfg = dir.path().join("config.toml");
        std::fs::write(
            &cfg,
            format!(
                "[[account]]\nname = \"alice\"\nsource = \"xmpp\"\njid = \"alice@example.test\"\n\
                 password_file = \"{pw}\"\nserver = \"127.0.0.1:1\"\ntls = \"insecure-plaintext\"\n\
                 [cluster]\nurl = \"{}\"\nusername = \"watcher\"\npassword_file = \"{pw}\"\n",
                nats.urls(),
                pw = pw.display(),
            ),
        )
        .expect("write config");
        let run = |args: &[&str]| {
            let started = Instant::now();
            let out = Command::new(env!("CARGO_BIN_EXE_imstatus"))
                .env_remove("IMSTATUS_CONFIG")
                .arg("--config")
                .arg(&cfg)
                .args(args)
                .stdin(Stdio::null())
                .output()
                .expect("run imstatus");
            assert!(
                started.elapsed() < STEP,
                "{args:?} took {:?}",
                started.elapsed()
            );
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!text.contains("nats-pw"), "{text}");
            (out.status.code(), text)
        };
        for role in ["watcher", "gateway"] {
            let (code, text) = run(&["serve", "--role", role]);
            assert_eq!(code, Some(1), "{text}");
            assert!(
                text.contains(
                    "imstatus: cluster: auth_failed (0x81000303): cannot connect to NATS at"
                ),
                "{text}"
            );
            assert!(text.contains("authorization violation"), "{text}");
            assert!(
                text.contains("  hint: check the credentials of `[cluster]`"),
                "{text}"
            );
        }
        let (code, text) = run(&["doctor"]);
        assert_eq!(code, Some(1), "{text}");
        assert!(
            text.contains("  FAIL cluster    auth_failed (0x81000303): cannot connect to NATS at"),
            "{text}"
        );
        assert!(
            text.contains("       hint: check the credentials of `[cluster]`"),
            "{text}"
        );
    }
}
