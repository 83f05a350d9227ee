//! Real Prosody, driven with the raw XMPP client.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use imstatus_testkit::{
    listening_sockets, pid_alive, wait_until, Error, Prosody, ProsodyOptions, XmppClient,
};

const D: Duration = Duration::from_secs(10);

fn login(prosody: &Prosody, user: &str, resource: &str) -> XmppClient {
    XmppClient::connect(
        prosody.port(),
        user,
        prosody.domain(),
        &format!("{user}pw"),
        resource,
    )
    .unwrap()
}

#[test]
fn an_observer_resource_sees_the_presence_of_another_resource_of_the_same_user() {
    let t = Instant::now();
    let prosody = Prosody::start(ProsodyOptions::default()).unwrap();
    eprintln!("prosody up after {:?}", t.elapsed());
    assert_eq!(prosody.domain(), "example.test");

    let mut obs = login(&prosody, "alice", "obs");
    assert_eq!(obs.jid(), "alice@example.test/obs");
    obs.presence(None, None, Some(-1)).unwrap();
    let mut desk = login(&prosody, "alice", "desk");
    desk.presence(Some("away"), Some("at lunch"), Some(5))
        .unwrap();

    let seen = obs.read_until("from='alice@example.test/desk'", D).unwrap();
    let last = seen.lines().last().unwrap();
    assert!(last.starts_with("<presence"), "{seen}");
    assert!(last.contains("<show>away</show>"), "{seen}");
    assert!(last.contains("<status>at lunch</status>"), "{seen}");
    assert!(last.contains("<priority>5</priority>"), "{seen}");

    desk.unavailable().unwrap();
    let gone = obs.read_until("from='alice@example.test/desk'", D).unwrap();
    assert!(gone.contains("type='unavailable'"), "{gone}");
    desk.close().unwrap();
    obs.close().unwrap();
    eprintln!("test body done after {:?}", t.elapsed());
}

#[test]
fn a_both_contact_sees_presence_and_a_reset_connection_goes_unavailable() {
    let prosody = Prosody::start(ProsodyOptions::default()).unwrap();
    let mut watcher = login(&prosody, "watcher", "w");
    watcher.presence(None, None, None).unwrap();
    let mut alice = login(&prosody, "alice", "phone");
    alice.presence(Some("dnd"), None, None).unwrap();
    let seen = watcher
        .read_until("from='alice@example.test/phone'", D)
        .unwrap();
    assert!(seen.contains("<show>dnd</show>"), "{seen}");

    let reset_at = Instant::now();
    alice.reset();
    let gone = watcher
        .read_until("from='alice@example.test/phone'", D)
        .unwrap();
    assert!(gone.contains("type='unavailable'"), "{gone}");
    eprintln!("unavailable after reset: {:?}", reset_at.elapsed());
    watcher.close().unwrap();
}

#[test]
fn a_wrong_password_is_an_xmpp_error() {
    let prosody = Prosody::start(ProsodyOptions::default()).unwrap();
    let err =
        XmppClient::connect(prosody.port(), "alice", "example.test", "nope", "x").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("SASL PLAIN as alice@example.test failed"),
        "{text}"
    );
    assert!(text.contains("not-authorized"), "{text}");
}

#[test]
fn only_the_c2s_port_listens_and_stop_leaves_no_process() {
    let mut prosody = Prosody::start(ProsodyOptions::default()).unwrap();
    let pid = prosody.pid().unwrap();
    let port = prosody.port();
    assert_eq!(
        listening_sockets(pid).unwrap(),
        vec![SocketAddr::from(([127, 0, 0, 1], port))]
    );
    // A stop before Prosody's event loop has turned kills it before its SIGTERM handler is
    // set: no clean shutdown to check.
    prosody.wait_serving().unwrap();
    let t = Instant::now();
    prosody.stop().unwrap();
    eprintln!("idle stop took {:?}", t.elapsed());
    assert!(!pid_alive(pid));
    assert_eq!(prosody.pid(), None);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    prosody.stop().unwrap();
    assert!(
        prosody.log().contains("Shutdown complete"),
        "{}",
        prosody.log()
    );
}

#[test]
fn restart_keeps_the_port_and_the_accounts() {
    let mut prosody = Prosody::start(ProsodyOptions::default()).unwrap();
    let port = prosody.port();
    let first = prosody.pid().unwrap();
    let mut obs = login(&prosody, "alice", "obs");
    obs.presence(None, None, Some(-1)).unwrap();

    let t = Instant::now();
    prosody.restart().unwrap();
    eprintln!("restart with a client took {:?}", t.elapsed());
    let second = prosody.pid().unwrap();
    assert_ne!(first, second);
    assert!(!pid_alive(first));
    assert_eq!(prosody.port(), port);
    // The old stream ends; <system-shutdown/> comes first unless SIGTERM raced the login.
    match obs.read_until("</stream:stream>", D) {
        Ok(_) => {}
        Err(Error::Xmpp { what, .. }) if what.contains("closed the connection") => {}
        Err(e) => panic!("the old stream did not end: {e}"),
    }

    let mut again = login(&prosody, "alice", "obs");
    again.presence(None, None, Some(-1)).unwrap();
    again.close().unwrap();
    prosody.stop().unwrap();
    assert!(!pid_alive(second));
}

#[test]
fn kill_leaves_no_process() {
    let mut prosody = Prosody::start(ProsodyOptions::default()).unwrap();
    let pid = prosody.pid().unwrap();
    prosody.kill();
    assert!(!pid_alive(pid));
    assert_eq!(prosody.pid(), None);
    // Drop after kill is a no-op.
}

#[test]
fn dropping_prosody_stops_it_and_deletes_its_dir() {
    let prosody = Prosody::start(ProsodyOptions::default()).unwrap();
    let pid = prosody.pid().unwrap();
    let dir = prosody.dir().to_owned();
    assert!(dir.join("prosody.log").exists());
    drop(prosody);
    assert!(!pid_alive(pid));
    assert!(!dir.exists());
}

#[test]
fn tls_mode_serves_a_non_ca_certificate_for_example_test() {
    let t = Instant::now();
    let prosody = Prosody::start(ProsodyOptions::tls()).unwrap();
    eprintln!("TLS prosody up after {:?}", t.elapsed());
    let cert = prosody.ca_cert().unwrap().to_owned();
    assert!(cert.exists());
    let pid = prosody.pid().unwrap();
    assert_eq!(
        listening_sockets(pid).unwrap(),
        vec![SocketAddr::from(([127, 0, 0, 1], prosody.port()))]
    );

    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(text.contains("DNS:example.test"), "{text}");

    // STARTTLS with the certificate as the only trusted root, verifying the host name.
    let out = Command::new("openssl")
        .args(["s_client", "-starttls", "xmpp", "-xmpphost", "example.test"])
        .args(["-connect", &format!("127.0.0.1:{}", prosody.port())])
        .args([
            "-verify_hostname",
            "example.test",
            "-verify_return_error",
            "-brief",
        ])
        .arg("-CAfile")
        .arg(&cert)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("Verification: OK"), "{all}");

    // Plaintext PLAIN is refused before TLS.
    let err =
        XmppClient::connect(prosody.port(), "alice", "example.test", "alicepw", "x").unwrap_err();
    assert!(err.to_string().contains("no SASL PLAIN"), "{err}");
}

#[test]
fn extra_modules_are_loaded_and_a_quiet_stream_times_out() {
    let opts = ProsodyOptions {
        extra_modules: vec!["version".into()],
        ..ProsodyOptions::default()
    };
    let prosody = Prosody::start(opts).unwrap();
    // Without presence nobody sends bob anything.
    let mut bob = login(&prosody, "bob", "quiet");
    let quiet = bob.read_stanza(Duration::from_millis(50));
    assert!(matches!(quiet, Err(Error::Timeout { .. })), "{quiet:?}");

    bob.send_raw(
        "<iq type='get' id='v1' to='example.test'><query xmlns='jabber:iq:version'/></iq>",
    )
    .unwrap();
    let reply = bob.read_stanza(D).unwrap();
    assert!(
        reply.contains("type='result'") && reply.contains("<name>Prosody</name>"),
        "{reply}"
    );
    bob.send_raw("<iq type='get' id='p1' to='example.test'><ping xmlns='urn:xmpp:ping'/></iq>")
        .unwrap();
    let pong = bob.read_until("id='p1'", D).unwrap();
    assert!(pong.contains("type='result'"), "{pong}");
    bob.close().unwrap();
}

#[test]
fn wait_until_polls_a_real_port() {
    let prosody = Prosody::start(ProsodyOptions::default()).unwrap();
    let port = prosody.port();
    let got = wait_until("the port", D, || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    assert!(got.is_ok());
}

#[test]
fn with_privacy_lists_prosody_advertises_and_applies_xep_0016() {
    let t = Instant::now();
    let prosody = Prosody::start(ProsodyOptions::default().with_privacy_lists()).unwrap();
    eprintln!("prosody with mod_privacy_lists up after {:?}", t.elapsed());
    let config = std::fs::read_to_string(prosody.config()).unwrap();
    assert!(config.contains("plugin_paths = {"), "{config}");
    assert!(config.contains("\"privacy_lists\";"), "{config}");

    let mut bob = login(&prosody, "bob", "laptop");
    bob.presence(None, None, None).unwrap();
    bob.read_until("from='bob@example.test/laptop'", D).unwrap();
    let mut alice = login(&prosody, "alice", "hidden");
    alice
        .send_raw("<iq type='get' id='d1' to='example.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .unwrap();
    let info = alice.read_until("id='d1'", D).unwrap();
    assert!(info.contains("var='jabber:iq:privacy'"), "{info}");
    alice
        .send_raw(
            "<iq type='set' id='l1'><query xmlns='jabber:iq:privacy'><list name='hide'>\
             <item action='deny' order='1'><presence-out/></item></list></query></iq>\
             <iq type='set' id='a1'><query xmlns='jabber:iq:privacy'><active name='hide'/></query></iq>",
        )
        .unwrap();
    let set = alice.read_until("id='a1'", D).unwrap();
    assert!(!set.contains("type='error'"), "{set}");
    alice.presence(None, None, Some(-1)).unwrap();
    // The reflection comes back to alice once Prosody has handled (and blocked) her presence.
    alice
        .read_until("from='alice@example.test/hidden'", D)
        .unwrap();
    // Prosody routes synchronously: a presence for bob would already be in his socket, and a
    // ping round trip for bob proves his stream has been flushed up to now.
    bob.send_raw("<iq type='get' id='p2' to='example.test'><ping xmlns='urn:xmpp:ping'/></iq>")
        .unwrap();
    let got = bob.read_until("id='p2'", D).unwrap();
    assert!(!got.contains("alice@example.test/hidden"), "{got}");
    alice.close().unwrap();
    bob.close().unwrap();
}

#[test]
fn a_missing_module_is_an_error_naming_the_package() {
    let opts = ProsodyOptions {
        extra_modules: vec!["imstatus_no_such_module".into()],
        ..ProsodyOptions::default()
    };
    let err = Prosody::start(opts).unwrap_err();
    assert!(matches!(err, Error::MissingModule { .. }), "{err}");
    assert!(err.to_string().contains("prosody-modules"), "{err}");
}
