//! The dashboard in a real headless Chromium, driven over WebDriver (chromedriver +
//! fantoccini): a card per account with the right state, live updates without a reload, a
//! visible "reconnecting…" state and a "reconnected" note across a gateway restart on the same
//! port, a layout that fits a phone, and a desktop account's activity (microphone, camera,
//! idle, lock) with its badge. Screenshots are kept in `target/tmp/`.
//!
//! Needs the Debian packages `chromium` and `chromium-driver`; a missing one is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, ClientBuilder};
use imstatus_core::{
    AccountId, ActivitySignal, App, Availability, ContactId, Observation, PartId, SourceKind,
    Status,
};
use imstatus_gateway::Gateway;
use imstatus_hub::testing::scripted;
use imstatus_hub::Hub;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(120);
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The real binary; `/usr/bin/chromium` is a shell wrapper.
const CHROMIUM: &str = "/usr/lib/chromium/chromium";

/// chromedriver on a free loopback port, in its own process group (so that the browsers it
/// starts are stopped with it).
struct Chromedriver {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Chromedriver {
    fn start() -> Chromedriver {
        for program in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: apt-get install -y chromium chromium-driver"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("imstatus-chromedriver-")
            .tempdir()
            .unwrap();
        let port = imstatus_testkit::free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                dir.path().join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let driver = Chromedriver { child, port, dir };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        imstatus_testkit::wait_until("chromedriver to listen", STEP, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok()
        })
        .expect("chromedriver listens");
        driver
    }

    async fn browser(&self) -> Client {
        let profile = self.dir.path().join("profile");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap_or_else(|e| panic!("a Chromium session: {e}\n{}", self.log()))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromedriver.log"))
            .map(|l| l.lines().rev().take(30).collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // SIGTERM to chromedriver's group (its PID), so browsers it left are stopped too.
        let pgid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        let _ = killpg(pgid, Signal::SIGTERM);
        let _ =
            imstatus_testkit::wait_until("chromedriver to exit", Duration::from_secs(5), || {
                self.child.try_wait().ok().flatten()
            });
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Everything the test looks at, read in one round trip.
const PAGE_STATE: &str = r#"
const q = (s) => document.querySelector(s);
const text = (e) => (e ? e.textContent.trim() : null);
const cards = [...document.querySelectorAll('.card')].map((c) => ({
  account: c.dataset.account,
  client: c.dataset.client,
  session: c.dataset.session,
  availability: c.dataset.availability,
  shown: text(c.querySelector('.avail')),
  message: text(c.querySelector('.message')),
  sessionText: text(c.querySelector('dd.session')),
  resources: [...c.querySelectorAll('.resources li')].map(text),
  resourcesShown: !c.querySelector('.resources').hidden,
  contacts: [...c.querySelectorAll('.contacts li')].map(text),
  call: !c.querySelector('.call').hidden,
  activity: c.querySelector('.activity').hidden
    ? null
    : Object.fromEntries([...c.querySelectorAll('.activity dd')].map(
        (d) => [d.className, { on: d.dataset.on === 'true', text: text(d) }])),
}));
return {
  conn: q('#conn').dataset.state,
  connText: text(q('#conn')),
  note: q('#note').hidden ? null : text(q('#note')),
  cards,
  marker: window.__notReloaded === true,
  scrollWidth: document.documentElement.scrollWidth,
  innerWidth: window.innerWidth,
};
"#;

async fn page(client: &Client) -> Value {
    client
        .execute(PAGE_STATE, vec![])
        .await
        .expect("page state")
}

fn card<'a>(state: &'a Value, account: &str) -> Option<&'a Value> {
    state["cards"]
        .as_array()?
        .iter()
        .find(|c| c["account"] == account)
}

/// Polls the page until `pred` holds; panics with the last state after `d`.
async fn wait_page(
    client: &Client,
    what: &str,
    d: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + d;
    loop {
        let state = page(client).await;
        if pred(&state) {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; page: {state:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn screenshot(client: &Client, name: &str) -> PathBuf {
    let png = client.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, png).expect("write the screenshot");
    eprintln!("screenshot: {}", path.display());
    path
}

fn available_desk(message: &str) -> Observation {
    Observation::Presence {
        part: PartId::new("desk"),
        status: Status::with_message(Availability::Available, message),
        priority: Some(5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_each_account_updates_live_and_survives_a_gateway_restart() {
    let driver = Chromedriver::start();
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let server = Server::start(gateway(&s.hub, &[])).await;
        let addr = server.addr;
        let browser = driver.browser().await;
        browser
            .goto(&server.url("/"))
            .await
            .expect("load the dashboard");

        // One card per account, with the hub's state.
        let state = wait_page(&browser, "three live cards", STEP, |p| {
            p["conn"] == "live"
                && p["cards"].as_array().is_some_and(|c| c.len() == 3)
                && card(p, "alice").is_some_and(|c| c["availability"] == "away")
        })
        .await;
        let alice = card(&state, "alice").unwrap();
        assert_eq!(alice["shown"], "away");
        assert_eq!(alice["message"], "lunch");
        assert_eq!(alice["session"], "signed_in");
        assert_eq!(alice["sessionText"], "signed in");
        assert_eq!(alice["client"], "unknown");
        let resources = alice["resources"].to_string();
        assert!(
            resources.contains("desk") && resources.contains("prio 5"),
            "{resources}"
        );
        assert_eq!(alice["contacts"].as_array().unwrap().len(), 2, "{alice}");
        assert!(alice["contacts"].to_string().contains("carol@example.test"));
        assert_eq!(card(&state, "bob").unwrap()["availability"], "available");
        assert_eq!(card(&state, "carol").unwrap()["availability"], "available");
        assert_eq!(state["connText"], "live");
        screenshot(&browser, "imstatus-gateway-dashboard.png").await;

        // A status change shows up without a reload.
        browser
            .execute("window.__notReloaded = true; return true;", vec![])
            .await
            .unwrap();
        s.alice.send([Observation::Presence {
            part: PartId::new("desk"),
            status: Status::with_message(Availability::Busy, "in a call"),
            priority: Some(5),
        }]);
        s.alice.send([Observation::Contact(
            ContactId::new("bob@example.test"),
            Status::with_message(Availability::Away, "coffee"),
        )]);
        let state = wait_page(&browser, "alice busy", STEP, |p| {
            card(p, "alice").is_some_and(|c| {
                c["availability"] == "busy" && c["contacts"].to_string().contains("coffee")
            })
        })
        .await;
        let alice = card(&state, "alice").unwrap();
        assert_eq!(alice["shown"], "busy");
        assert_eq!(alice["message"], "in a call");
        assert_eq!(state["marker"], true, "the page was not reloaded");

        // The gateway stops: the page says it is reconnecting.
        server.stop().await.expect("graceful stop");
        let state = wait_page(&browser, "reconnecting", STEP, |p| {
            p["conn"] == "reconnecting"
        })
        .await;
        assert_eq!(state["connText"], "reconnecting…");
        assert!(
            state["note"]
                .as_str()
                .unwrap_or_default()
                .contains("reconnecting"),
            "{state:#}"
        );
        screenshot(&browser, "imstatus-gateway-dashboard-reconnecting.png").await;

        // A new gateway (and hub, with new state) on the same port: reconnected, fresh state.
        let s2 = scripted_hub_with(
            vec![available_desk("back"), Observation::Synced],
            vec![
                Observation::Presence {
                    part: PartId::new("phone"),
                    status: Status::new(Availability::ExtendedAway),
                    priority: Some(0),
                },
                Observation::Synced,
            ],
        )
        .await;
        let server = Server::start_on(gateway(&s2.hub, &[]), addr).await;
        let state = wait_page(
            &browser,
            "reconnected with the new state",
            Duration::from_secs(20),
            |p| {
                p["conn"] == "live"
                    && p["note"]
                        .as_str()
                        .is_some_and(|n| n.contains("reconnected"))
                    && card(p, "alice").is_some_and(|c| c["availability"] == "available")
                    && card(p, "bob").is_some_and(|c| c["availability"] == "extended_away")
            },
        )
        .await;
        let alice = card(&state, "alice").unwrap();
        assert_eq!(alice["message"], "back");
        assert_eq!(
            alice["contacts"],
            json!(["no contacts"]),
            "contacts from the new snapshot"
        );
        assert_eq!(card(&state, "bob").unwrap()["shown"], "extended away");
        assert_eq!(state["marker"], true, "reconnected without a reload");
        assert_eq!(state["cards"].as_array().unwrap().len(), 3);
        screenshot(&browser, "imstatus-gateway-dashboard-reconnected.png").await;

        // Live again after the reconnect.
        s2.alice.send([available_desk("still here")]);
        wait_page(&browser, "the next change", STEP, |p| {
            card(p, "alice").is_some_and(|c| c["message"] == "still here")
        })
        .await;

        // Readable on a phone: nothing wider than the screen.
        browser.set_window_size(390, 844).await.expect("resize");
        let state = wait_page(&browser, "the phone layout", STEP, |p| {
            p["innerWidth"].as_u64().is_some_and(|w| w < 500)
        })
        .await;
        assert!(
            state["scrollWidth"].as_u64() <= state["innerWidth"].as_u64(),
            "no horizontal scrolling: {state:#}"
        );
        screenshot(&browser, "imstatus-gateway-dashboard-phone.png").await;

        browser.close().await.expect("close the browser");
        server.stop().await.unwrap();
    })
    .await;
}

/// A page of another site: a tiny HTTP server on its own port that answers every request with
/// one HTML page whose script tries everything a hostile page could against the gateway whose
/// address follows `#` in the page's URL.
struct OtherSite {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl OtherSite {
    async fn start() -> OtherSite {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let page = OTHER_SITE_PAGE.to_owned();
        let task = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    return;
                };
                let page = page.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{page}",
                        page.len()
                    );
                    let _ = tcp.write_all(answer.as_bytes()).await;
                });
            }
        });
        OtherSite { addr, task }
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn url(&self, gateway: SocketAddr) -> String {
        format!("http://{}/#{gateway}", self.addr)
    }
}

impl Drop for OtherSite {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a hostile page tries: a WebSocket, an EventSource, a CORS fetch and a badge `<img>` (whose size would tell the status), recording everything it gets.
const OTHER_SITE_PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>another site</title></head><body><script>
"use strict";
const gw = location.hash.slice(1);
const got = window.__got = {
  wsOpen: false, wsMessages: [], wsClosed: null,
  sseOpen: false, sseMessages: [], sseError: false,
  fetchText: null, fetchError: null,
  badgeWidth: null, badgeError: false,
};
const ws = new WebSocket(`ws://${gw}/v1/ws`);
ws.onopen = () => { got.wsOpen = true; };
ws.onmessage = (e) => { got.wsMessages.push(String(e.data)); };
ws.onclose = (e) => { got.wsClosed = e.code; };
const es = new EventSource(`http://${gw}/v1/events`);
es.onopen = () => { got.sseOpen = true; };
es.onmessage = (e) => { got.sseMessages.push(String(e.data)); };
es.onerror = () => { got.sseError = true; es.close(); };
fetch(`http://${gw}/v1/accounts`).then((r) => r.text()).then(
  (t) => { got.fetchText = t; }, (e) => { got.fetchError = String(e); });
const img = new Image();
img.onload = () => { got.badgeWidth = img.naturalWidth; };
img.onerror = () => { got.badgeError = true; };
img.src = `http://${gw}/v1/accounts/alice/badge.svg`;
</script></body></html>
"#;

/// Everything the other site's page recorded, once every attempt has settled.
async fn other_site_results(browser: &Client) -> Value {
    let deadline = Instant::now() + STEP;
    loop {
        let got = browser
            .execute("return window.__got || null;", vec![])
            .await
            .expect("page state");
        // Each attempt either got something or failed for good.
        let some = |k: &str| got[k].as_array().is_some_and(|m| !m.is_empty());
        let settled = (got["wsClosed"].is_number() || some("wsMessages"))
            && (got["sseError"] == true || some("sseMessages"))
            && (got["fetchText"].is_string() || got["fetchError"].is_string())
            && (got["badgeWidth"].is_number() || got["badgeError"] == true);
        if settled {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "the page did not settle: {got:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_from_another_origin_gets_nothing_from_the_gateway() {
    let driver = Chromedriver::start();
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let evil = OtherSite::start().await;
        let friend = OtherSite::start().await;
        let gw = Gateway::new(s.hub.clone(), &[])
            .with_allowed_origins([friend.origin().as_str()])
            .into_state();
        let server = Server::start(gw).await;
        let browser = driver.browser().await;

        browser
            .goto(&evil.url(server.addr))
            .await
            .expect("load the other site");
        let got = other_site_results(&browser).await;
        eprintln!("another origin got: {got:#}");
        assert_eq!(got["wsOpen"], false, "{got:#}");
        assert_eq!(got["wsMessages"], json!([]), "{got:#}");
        assert_eq!(got["sseOpen"], false, "{got:#}");
        assert_eq!(got["sseMessages"], json!([]), "{got:#}");
        assert_eq!(got["fetchText"], Value::Null, "{got:#}");
        assert_eq!(
            got["badgeWidth"],
            Value::Null,
            "the badge's size tells the status: {got:#}"
        );
        assert_eq!(got["badgeError"], true, "{got:#}");
        assert_eq!(server.gateway.open_streams(), 0);

        // The same page from an origin in allowed_origins reads all of it but the <img>, which
        // carries no Origin to allow: what the page above got is what the gateway refused.
        browser
            .goto(&friend.url(server.addr))
            .await
            .expect("load the allowed site");
        let got = other_site_results(&browser).await;
        let first = |key: &str| -> Value {
            let text = got[key][0]
                .as_str()
                .unwrap_or_else(|| panic!("{key}: {got:#}"));
            serde_json::from_str(text).unwrap()
        };
        assert_eq!(first("wsMessages")["event"], "snapshot", "{got:#}");
        assert_eq!(first("sseMessages")["event"], "snapshot", "{got:#}");
        assert!(
            got["fetchText"]
                .as_str()
                .is_some_and(|t| t.contains("\"alice\"")),
            "{got:#}"
        );
        assert_eq!(got["badgeError"], true, "{got:#}");

        // The dashboard, on the gateway's own origin, still opens a WebSocket and reads it.
        browser
            .goto(&server.url("/"))
            .await
            .expect("load the dashboard");
        wait_page(&browser, "the live dashboard", STEP, |p| {
            p["conn"] == "live"
        })
        .await;
        let first = browser
            .execute_async(
                r#"const done = arguments[arguments.length - 1];
                   const ws = new WebSocket(`ws://${location.host}/v1/ws`);
                   ws.onmessage = (e) => { ws.close(); done(String(e.data)); };
                   ws.onclose = (e) => done(`closed ${e.code}`);"#,
                vec![],
            )
            .await
            .expect("a same-origin WebSocket");
        let first: Value = serde_json::from_str(first.as_str().unwrap())
            .unwrap_or_else(|e| panic!("{e}: {first}"));
        assert_eq!(first["event"], "snapshot");

        browser.close().await.expect("close the browser");
        server.stop().await.unwrap();
    })
    .await;
}

/// The text of the account's badge, fetched by the page from its own origin.
async fn badge_text(browser: &Client, account: &str) -> String {
    let svg = browser
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
               fetch(`/v1/accounts/${arguments[0]}/badge.svg`, { cache: 'no-store' })
                 .then((r) => r.text()).then(done, (e) => done(`failed: ${e}`));"#,
            vec![json!(account)],
        )
        .await
        .expect("fetch the badge");
    let svg = svg.as_str().unwrap_or_default().to_owned();
    // The value is the badge's last text.
    svg.rsplit("</text>")
        .nth(1)
        .and_then(|t| t.rsplit('>').next())
        .unwrap_or_else(|| panic!("no text in the badge: {svg}"))
        .to_owned()
}

fn signals(mic: (bool, &str), camera: (bool, &str), idle: (bool, &str), locked: bool) -> Value {
    json!({
        "microphone": {"on": mic.0, "text": mic.1},
        "camera": {"on": camera.0, "text": camera.1},
        "idle": {"on": idle.0, "text": idle.1},
        "locked": {"on": locked, "text": if locked { "locked" } else { "unlocked" }},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_a_desktop_accounts_activity_live_and_its_badge_says_on_a_call() {
    let driver = Chromedriver::start();
    limit(LIMIT, async {
        // A desktop-like account (what source = "desktop" reports at start) beside an IM one.
        let desk = AccountId::new("desk");
        let (source, script) = scripted(
            SourceKind::new_static("desktop"),
            vec![
                Observation::NoSession,
                Observation::ClientAppeared,
                Observation::Activity(ActivitySignal::Microphone(vec![])),
                Observation::Activity(ActivitySignal::Camera(vec![])),
                Observation::Activity(ActivitySignal::Idle {
                    idle: false,
                    input_ago: Some(Duration::from_secs(3)),
                }),
                Observation::Activity(ActivitySignal::Locked(false)),
                Observation::Synced,
            ],
        );
        let (im, _im) = scripted(SourceKind::new_static("test"), alice_initial());
        let hub = Hub::builder()
            .with_source(desk.clone(), source)
            .with_source(alice(), im)
            .start();
        assert!(hub.wait_settled(&[desk.clone(), alice()], STEP).await);
        let hub = Arc::new(hub);
        let server = Server::start(gateway(&hub, &[])).await;
        let browser = driver.browser().await;
        browser
            .goto(&server.url("/"))
            .await
            .expect("load the dashboard");

        // Nothing in use: four rows, no call; the IM account has no activity rows at all.
        let state = wait_page(&browser, "the desk card", STEP, |p| {
            p["conn"] == "live" && card(p, "desk").is_some_and(|c| !c["activity"].is_null())
        })
        .await;
        let card_of = |state: &Value, name: &str| card(state, name).unwrap().clone();
        let d = card_of(&state, "desk");
        assert_eq!(
            d["activity"],
            signals((false, "off"), (false, "off"), (false, "active"), false)
        );
        assert_eq!(d["call"], false);
        assert_eq!(d["client"], "running");
        // Headed by what the desktop does, as the badge says; no empty resource list.
        assert_eq!(d["shown"], "active");
        assert_eq!(d["resourcesShown"], false);
        let a = card_of(&state, "alice");
        assert_eq!(a["activity"], Value::Null, "{a}");
        assert_eq!(a["shown"], "away");
        assert_eq!(a["resourcesShown"], true);
        assert_eq!(a["call"], false);
        assert_eq!(badge_text(&browser, "desk").await, "active");
        assert_eq!(badge_text(&browser, "alice").await, "away");

        // parecord captures from the microphone: on a call, with the app, live.
        script.send([Observation::Activity(ActivitySignal::Microphone(vec![
            App::new("parecord", Some(4242)),
        ]))]);
        let state = wait_page(&browser, "the microphone in use", STEP, |p| {
            card(p, "desk").is_some_and(|c| c["activity"]["microphone"]["on"] == true)
        })
        .await;
        let d = card_of(&state, "desk");
        assert_eq!(
            d["activity"],
            signals(
                (true, "in use · parecord (4242)"),
                (false, "off"),
                (false, "active"),
                false
            )
        );
        assert_eq!(d["call"], true);
        assert_eq!(d["shown"], "on a call");
        assert_eq!(badge_text(&browser, "desk").await, "on a call");
        screenshot(&browser, "imstatus-gateway-dashboard-activity.png").await;

        // The call ends, the user walks away and the screen locks.
        script.send([
            Observation::Activity(ActivitySignal::Microphone(vec![])),
            Observation::Activity(ActivitySignal::Idle {
                idle: true,
                input_ago: Some(Duration::from_secs(300)),
            }),
            Observation::Activity(ActivitySignal::Locked(true)),
        ]);
        let state = wait_page(&browser, "locked", STEP, |p| {
            card(p, "desk").is_some_and(|c| c["activity"]["locked"]["on"] == true)
        })
        .await;
        let d = card_of(&state, "desk");
        assert_eq!(d["call"], false);
        assert_eq!(
            d["activity"]["microphone"],
            json!({"on": false, "text": "off"})
        );
        assert_eq!(d["activity"]["idle"]["on"], true);
        let idle = d["activity"]["idle"]["text"].as_str().unwrap();
        assert!(idle.starts_with("idle since "), "{idle}");
        assert_eq!(d["shown"], "locked");
        assert_eq!(badge_text(&browser, "desk").await, "locked");
        assert_eq!(
            card_of(&state, "alice")["activity"],
            Value::Null,
            "still none for the IM account"
        );

        browser.close().await.expect("close the browser");
        server.stop().await.unwrap();
    })
    .await;
}
