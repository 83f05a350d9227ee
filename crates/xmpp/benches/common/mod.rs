//! What the XMPP source's bench executables share: arguments, /proc readings, percentiles and
//! a hub over one plaintext loopback XMPP account.
#![allow(dead_code)]

use std::io::Write as _;
use std::time::Duration;

use imstatus_config::Secret;
use imstatus_core::AccountId;
use imstatus_hub::Hub;
use imstatus_xmpp::XmppSource;
use imstatus_xmpp::{TlsMode, Visibility, XmppConfig};

/// The value after `name` on the command line, or `default`.
pub fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}

/// (user+system CPU seconds, RSS in KB) of this process, from /proc.
pub fn cpu_rss() -> (f64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the ')'; clock ticks of 1/100 s.
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks / 100.0, rss)
}

/// As xmpputil.pct: nearest rank on the sorted values.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let k = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[k.min(sorted.len() - 1)]
}

/// A hub over the XMPP source logged in (plaintext, visible) as `jid` on 127.0.0.1:`port`,
/// once it has settled (panics with the source's error if it does not within `limit`). The
/// returned file holds the password and must live as long as the hub.
pub async fn signed_in_hub(
    jid: &str,
    password: &str,
    port: u16,
    contacts: bool,
    limit: Duration,
) -> (Hub, AccountId, tempfile::NamedTempFile) {
    let mut pwfile = tempfile::NamedTempFile::new().unwrap();
    writeln!(pwfile, "{password}").unwrap();
    let config = XmppConfig {
        server: Some(format!("127.0.0.1:{port}")),
        tls: TlsMode::InsecurePlaintext,
        contacts,
        visibility: Visibility::Visible,
        ..XmppConfig::new(jid, Secret::File(pwfile.path().to_owned()))
    };
    let account = AccountId::new(jid.split('@').next().unwrap_or(jid));
    let hub = Hub::builder()
        .with_source(
            account.clone(),
            std::sync::Arc::new(XmppSource::new(&config)),
        )
        .start();
    assert!(
        hub.wait_settled(std::slice::from_ref(&account), limit)
            .await,
        "the XMPP source did not sign in: {:?}",
        hub.source_error(&account)
    );
    (hub, account, pwfile)
}
