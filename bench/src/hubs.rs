//! Hubs over real sources, signed in before a measurement starts, and a source this process
//! feeds itself (the load-test servers' stand-in for a busy account).

use std::io::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use imstatus_config::Secret;
use imstatus_core::{AccountId, Observation, SourceKind};
use imstatus_hub::{BoxFuture, Hub, Sink, Source};
use imstatus_purple::{PurpleConfig, PurpleSource};
use imstatus_xmpp::{TlsMode, Visibility, XmppConfig, XmppSource};
use tokio::sync::mpsc;

use crate::fail;

/// A hub over one XMPP account, signed in.
pub struct XmppHub {
    /// The hub.
    pub hub: Hub,
    /// The account (the JID's local part).
    pub account: AccountId,
    /// The password file the source reads; lives as long as the hub.
    _password: tempfile::NamedTempFile,
}

/// A hub over the XMPP source logged in (plaintext, visible) as `jid` on 127.0.0.1:`port`,
/// tracking contacts or not, once it has settled; exits with the source's error when it does
/// not within `limit`.
pub async fn xmpp(
    jid: &str,
    password: &str,
    port: u16,
    contacts: bool,
    limit: Duration,
) -> XmppHub {
    let mut file = tempfile::NamedTempFile::new()
        .unwrap_or_else(|e| fail(format_args!("a temporary password file: {e}")));
    if let Err(e) = writeln!(file, "{password}") {
        fail(format_args!("writing the password file: {e}"));
    }
    let config = XmppConfig {
        server: Some(format!("127.0.0.1:{port}")),
        tls: TlsMode::InsecurePlaintext,
        contacts,
        visibility: Visibility::Visible,
        ..XmppConfig::new(jid, Secret::File(file.path().to_owned()))
    };
    let account = AccountId::new(jid.split('@').next().unwrap_or(jid));
    let hub = Hub::builder()
        .with_source(account.clone(), Arc::new(XmppSource::new(&config)))
        .start();
    settled(&hub, &account, limit).await;
    XmppHub {
        hub,
        account,
        _password: file,
    }
}

/// The account name of [`purple`]'s hub.
pub const PURPLE_ACCOUNT: &str = "desktop";

/// A hub over the libpurple source watching the bus at `address` (all accounts, no contacts);
/// not waited for (see [`settled`]).
pub fn purple(address: &str) -> Hub {
    let config = PurpleConfig {
        bus: Some(address.into()),
        accounts: vec![],
        contacts: false,
    };
    Hub::builder()
        .with_source(
            AccountId::new(PURPLE_ACCOUNT),
            Arc::new(PurpleSource::new(&config)),
        )
        .start()
}

/// Waits until `account`'s source has reported its state; exits with the source's error when
/// it does not within `limit`.
pub async fn settled(hub: &Hub, account: &AccountId, limit: Duration) {
    if !hub.wait_settled(std::slice::from_ref(account), limit).await {
        fail(format_args!(
            "{account} did not settle within {limit:?}: {:?}",
            hub.source_error(account)
        ));
    }
}

/// A source that reports what this process feeds it: the initial observations first, then
/// every batch sent through its [`Feed`], in order. The load-test servers use it for accounts
/// whose changes they make themselves, at a controlled rate.
pub struct Fed {
    kind: SourceKind,
    initial: Vec<Observation>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Vec<Observation>>>>,
}

/// The sending end of a [`Fed`] source. Its queue is unbounded: the feeder is a benchmark's
/// open loop, bounded in count (rate × duration), and a source that falls behind it is what the
/// benchmark measures.
#[derive(Clone)]
pub struct Feed {
    tx: mpsc::UnboundedSender<Vec<Observation>>,
}

/// A [`Fed`] source of `kind` that starts with `initial`, and its [`Feed`].
pub fn fed(kind: SourceKind, initial: Vec<Observation>) -> (Arc<Fed>, Feed) {
    let (tx, rx) = mpsc::unbounded_channel();
    let source = Fed {
        kind,
        initial,
        rx: Mutex::new(Some(rx)),
    };
    (Arc::new(source), Feed { tx })
}

impl Feed {
    /// Reports `observations` as one batch (dropped once the hub is gone).
    pub fn send(&self, observations: impl IntoIterator<Item = Observation>) {
        let _ = self.tx.send(observations.into_iter().collect());
    }
}

impl Source for Fed {
    fn kind(&self) -> SourceKind {
        self.kind.clone()
    }

    fn run(self: Arc<Self>, sink: Sink) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            sink.observe_all(self.initial.clone());
            let rx = self
                .rx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(mut rx) = rx {
                while let Some(batch) = rx.recv().await {
                    sink.observe_all(batch);
                }
            }
            // Every feed is gone: the account stays as it is.
            std::future::pending::<()>().await;
        })
    }
}
