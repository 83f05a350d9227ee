//! Real finch in tmux on a private bus, against real Prosody.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use imstatus_testkit::{
    pid_alive, wait_until, DbusArg, DbusDaemon, Finch, Prosody, ProsodyOptions, XmppClient,
    PURPLE_SERVICE,
};

const D: Duration = Duration::from_secs(10);
const FINCH: &str = "from='alice@example.test/finch'";

/// alice's own observer resource at priority -1 (recipe §5).
fn observer(prosody: &Prosody) -> XmppClient {
    let mut obs =
        XmppClient::connect(prosody.port(), "alice", prosody.domain(), "alicepw", "obs").unwrap();
    obs.presence(None, None, Some(-1)).unwrap();
    obs
}

fn wait_name_released(bus: &DbusDaemon) {
    wait_until("finch's bus name to be released", D, || {
        (!bus.has_owner(PURPLE_SERVICE).ok()?).then_some(())
    })
    .unwrap();
}

#[test]
fn finch_signs_in_and_its_away_status_reaches_another_resource() {
    let prosody = Prosody::start(ProsodyOptions::default()).unwrap();
    let bus = DbusDaemon::start().unwrap();
    let mut obs = observer(&prosody);

    let t = Instant::now();
    let mut finch = Finch::start(&bus, &[prosody.finch_account("alice", "alicepw")]).unwrap();
    finch.wait_running(D).unwrap();
    eprintln!("finch on the bus after {:?}", t.elapsed());
    finch.wait_signed_in(D).unwrap();
    eprintln!("finch signed in after {:?}", t.elapsed());
    let pid = finch.pid();
    let tmux = finch.tmux_server_pid().unwrap();
    assert!(pid_alive(pid) && pid_alive(tmux));

    let hello = obs.read_until(FINCH, D).unwrap();
    assert!(hello.contains("<priority>1</priority>"), "{hello}");

    let version = finch.purple_string("PurpleCoreGetVersion", &[]).unwrap();
    assert!(version.starts_with("2."), "{version}");
    let accounts = finch
        .purple_ints("PurpleAccountsGetAllActive", &[])
        .unwrap();
    assert_eq!(accounts.len(), 1);
    let name = finch
        .purple_string("PurpleAccountGetUsername", &[DbusArg::Int(accounts[0])])
        .unwrap();
    assert_eq!(name, "alice@example.test/finch");
    let err = finch
        .purple_call("PurpleAccountGetUsername", &[DbusArg::Int(-5)])
        .unwrap_err();
    assert!(err.to_string().contains("InvalidHandle"), "{err}");

    let t = Instant::now();
    finch.set_status(5, Some("lunch")).unwrap();
    let away = obs.read_until("<show>away</show>", D).unwrap();
    eprintln!("away seen after {:?}", t.elapsed());
    let away = away.lines().last().unwrap();
    assert!(away.contains(FINCH), "{away}");
    assert!(away.contains("<status>lunch</status>"), "{away}");
    let current = finch
        .purple_int("PurpleSavedstatusGetCurrent", &[])
        .unwrap();
    assert_eq!(
        finch
            .purple_int("PurpleSavedstatusGetType", &[DbusArg::Int(current)])
            .unwrap(),
        5
    );
    // The same status again reuses the transient saved status.
    finch.set_status(5, Some("lunch")).unwrap();
    assert_eq!(
        finch
            .purple_int("PurpleSavedstatusGetCurrent", &[])
            .unwrap(),
        current
    );

    let t = Instant::now();
    assert_eq!(finch.quit().unwrap(), 0);
    eprintln!("Alt-q to exit code: {:?}", t.elapsed());
    wait_name_released(&bus);
    assert!(!pid_alive(pid));
    let bye = obs.read_until(FINCH, D).unwrap();
    assert!(
        bye.lines().last().unwrap().contains("type='unavailable'"),
        "{bye}"
    );

    drop(finch);
    assert!(!pid_alive(tmux));
    obs.close().unwrap();

    // Recipe §8 order: finch, observers, dbus-daemon, Prosody; every recorded PID is gone.
    let (bus_pid, prosody_pid) = (bus.pid(), prosody.pid().unwrap());
    drop(bus);
    drop(prosody);
    assert!(!pid_alive(bus_pid) && !pid_alive(prosody_pid));
}

#[test]
fn kill9_releases_the_bus_name_and_the_server_sees_unavailable() {
    let prosody = Prosody::start(ProsodyOptions::default()).unwrap();
    let bus = DbusDaemon::start().unwrap();
    let mut obs = observer(&prosody);
    let mut finch = Finch::start(&bus, &[prosody.finch_account("alice", "alicepw")]).unwrap();
    finch.wait_signed_in(D).unwrap();
    obs.read_until(FINCH, D).unwrap();
    let pid = finch.pid();

    let t = Instant::now();
    finch.kill9();
    assert_eq!(finch.exit_code(), Some(137));
    assert!(!pid_alive(pid));
    wait_name_released(&bus);
    eprintln!("SIGKILL to bus name gone: {:?}", t.elapsed());
    let bye = obs.read_until(FINCH, D).unwrap();
    eprintln!("SIGKILL to unavailable: {:?}", t.elapsed());
    assert!(
        bye.lines().last().unwrap().contains("type='unavailable'"),
        "{bye}"
    );
    // quit() after the fact reports the code instead of failing.
    assert_eq!(finch.quit().unwrap(), 137);
    assert!(finch.wait_running(Duration::from_millis(100)).is_err());
}

#[test]
fn restart_starts_from_a_fresh_config_dir() {
    let prosody = Prosody::start(ProsodyOptions::default()).unwrap();
    let bus = DbusDaemon::start().unwrap();
    let mut obs = observer(&prosody);
    let mut finch = Finch::start(&bus, &[prosody.finch_account("alice", "alicepw")]).unwrap();
    finch.wait_signed_in(D).unwrap();
    finch.set_status(6, Some("gone")).unwrap();
    obs.read_until("<show>xa</show>", D).unwrap();
    let (first, first_tmux) = (finch.pid(), finch.tmux_server_pid().unwrap());

    finch.restart().unwrap();
    assert!(!pid_alive(first) && !pid_alive(first_tmux));
    assert_ne!(finch.pid(), first);
    finch.wait_signed_in(D).unwrap();
    // Fresh config dir (P10): available again, not extended away.
    let back = obs.read_until("<priority>1</priority>", D).unwrap();
    let back = back.lines().last().unwrap();
    assert!(back.contains(FINCH) && !back.contains("<show>"), "{back}");
    let pid = finch.pid();
    let tmux = finch.tmux_server_pid().unwrap();
    let dir = finch.dir().to_owned();
    assert!(finch.config_dir().join("accounts.xml").exists());
    assert!(finch.screen().contains("Buddy List"), "{}", finch.screen());
    drop(finch);
    assert!(!pid_alive(pid) && !pid_alive(tmux));
    assert!(!dir.exists());
}

#[test]
fn a_wrong_password_times_out_with_finch_log_and_screen() {
    let prosody = Prosody::start(ProsodyOptions::default()).unwrap();
    let bus = DbusDaemon::start().unwrap();
    let mut finch = Finch::start(&bus, &[prosody.finch_account("alice", "wrong")]).unwrap();
    finch.wait_running(D).unwrap();
    let account = finch
        .purple_int(
            "PurpleAccountsFind",
            &["alice@example.test/finch".into(), "prpl-jabber".into()],
        )
        .unwrap();
    assert_ne!(account, 0);
    // libpurple disables the account after an authentication failure.
    wait_until("the account to be disabled", D, || {
        let enabled = finch.purple_int(
            "PurpleAccountGetEnabled",
            &[DbusArg::Int(account), "gnt-purple".into()],
        );
        (enabled.ok()? == 0).then_some(())
    })
    .unwrap();

    let err = finch
        .wait_signed_in(Duration::from_millis(200))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("timed out after 200ms waiting for finch's accounts"),
        "{err}"
    );
    assert!(err.contains("Incorrect username or password"), "{err}");
    // The dialog is partly hidden behind the debug window that `finch -d` opens.
    assert!(err.contains("re-enable the account"), "{err}");
    assert!(err.contains("active accounts [], IsConnected"), "{err}");
    assert_eq!(finch.quit().unwrap(), 0);
}

#[test]
fn finch_signs_in_over_tls_with_the_seeded_certificate() {
    let prosody = Prosody::start(ProsodyOptions::tls()).unwrap();
    let bus = DbusDaemon::start().unwrap();
    let account = prosody.finch_account("alice", "alicepw");
    assert!(account.tls_cert.is_some());
    let t = Instant::now();
    let mut finch = Finch::start(&bus, &[account]).unwrap();
    finch.wait_signed_in(D).unwrap();
    eprintln!("TLS finch signed in after {:?}", t.elapsed());
    assert!(finch
        .config_dir()
        .join("certificates/x509/tls_peers/127.0.0.1")
        .exists());
    assert_eq!(finch.quit().unwrap(), 0);
}
