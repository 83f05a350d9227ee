//! Real ejabberd, run by the testkit as a child process, driven with the raw XMPP client.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use imstatus_testkit::{
    listening_sockets, pid_alive, Ejabberd, EjabberdOptions, Error, XmppClient,
};

const D: Duration = Duration::from_secs(10);

fn login(server: &Ejabberd, user: &str, resource: &str) -> XmppClient {
    XmppClient::connect(
        server.port(),
        user,
        server.domain(),
        &format!("{user}pw"),
        resource,
    )
    .unwrap()
}

#[test]
fn ejabberd_serves_the_accounts_and_rosters_on_one_loopback_port_and_stops_by_pid() {
    let t = Instant::now();
    let mut server = Ejabberd::start(EjabberdOptions::default()).unwrap();
    eprintln!("ejabberd up after {:?}", t.elapsed());
    let pid = server.pid().unwrap();
    let port = server.port();
    assert_eq!(
        listening_sockets(pid).unwrap(),
        vec![SocketAddr::from(([127, 0, 0, 1], port))],
        "only c2s listens (no epmd, no http, no s2s)"
    );

    // bob and alice are 'both': alice's presence reaches bob.
    let mut bob = login(&server, "bob", "laptop");
    bob.presence(None, None, None).unwrap();
    let mut alice = login(&server, "alice", "desk");
    alice
        .presence(Some("away"), Some("lunch"), Some(2))
        .unwrap();
    let seen = bob.read_until("from='alice@example.test/desk'", D).unwrap();
    assert!(seen.contains("<show>away</show>"), "{seen}");

    alice
        .send_raw("<iq type='get' id='d1' to='example.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .unwrap();
    let info = alice.read_until("id='d1'", D).unwrap();
    assert!(info.contains("var='jabber:iq:privacy'"), "{info}");
    assert!(info.contains("name='ejabberd'"), "{info}");
    alice
        .send_raw("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
        .unwrap();
    let roster = alice.read_until("id='r1'", D).unwrap();
    assert!(roster.contains("jid='bob@example.test'"), "{roster}");
    assert!(roster.contains("jid='watcher@example.test'"), "{roster}");
    assert!(roster.contains("subscription='both'"), "{roster}");

    let wrong = XmppClient::connect(port, "alice", "example.test", "nope", "x").unwrap_err();
    assert!(wrong.to_string().contains("not-authorized"), "{wrong}");

    alice.close().unwrap();
    bob.close().unwrap();
    let t = Instant::now();
    server.stop().unwrap();
    eprintln!("stop took {:?}", t.elapsed());
    assert!(!pid_alive(pid));
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn ejabberd_restart_keeps_the_port_and_the_accounts_and_drop_cleans_up() {
    let mut server = Ejabberd::start(EjabberdOptions {
        privacy: false,
        ..EjabberdOptions::default()
    })
    .unwrap();
    let port = server.port();
    let first = server.pid().unwrap();
    let mut obs = login(&server, "alice", "obs");
    obs.send_raw("<iq type='get' id='d1' to='example.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .unwrap();
    let info = obs.read_until("id='d1'", D).unwrap();
    assert!(!info.contains("jabber:iq:privacy"), "{info}");

    let t = Instant::now();
    server.restart().unwrap();
    eprintln!("restart with a client took {:?}", t.elapsed());
    let second = server.pid().unwrap();
    assert_ne!(first, second);
    assert!(!pid_alive(first));
    assert_eq!(server.port(), port);
    match obs.read_until("</stream:stream>", D) {
        Ok(_) => {}
        Err(Error::Xmpp { what, .. }) if what.contains("closed the connection") => {}
        Err(e) => panic!("the old stream did not end: {e}"),
    }
    let again = login(&server, "alice", "obs");
    again.close().unwrap();

    let dir = server.dir().to_owned();
    assert!(dir.join("ejabberd.log").exists());
    let t = Instant::now();
    drop(server);
    eprintln!("drop took {:?}", t.elapsed());
    assert!(!pid_alive(second));
    assert!(!dir.exists());
}
