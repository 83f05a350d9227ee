//! imstatus person: several accounts (and a desktop's signals) combined into one answer.
//!
//! A `[[person]]` in the config is an account like any other to every interface (`status`,
//! `watch`, `wait`, hooks, the gateway, MQTT), of source `person`. It is built on the hub's
//! seam for sources that combine other accounts: [`PersonSource`] names its members
//! ([`Source::members`]), subscribes to them and to its signals
//! account through its sink, folds each whole observation batch into the core's sans-IO
//! [`Person`](imstatus_core::person::Person), and reports what the written rule
//! ([`imstatus_core::person::decide`], `docs/person.md`) decides as one
//! [`Observation::Person`](imstatus_core::Observation::Person): the core's tracker stays the
//! only place that decides events, so a person keeps the ordering contract and emits one
//! `status_changed` per transition. For `sync`, it performs the writes the core plans
//! through [`Sink::set_status`](imstatus_hub::Sink::set_status) and
//! [`Sink::restore_status`](imstatus_hub::Sink::restore_status); the core remembers each one to
//! recognise it when it comes back. Nothing here does I/O but through the hub.
//!
//! Persons are never written as `[[account]]`s: [`PersonFactory`] exists so that the kind has
//! a title (the Home Assistant device model) and a clear refusal, and the binary turns each
//! [`PersonConfig`] into an account with [`account_config`].

mod source;

use std::any::Any;
use std::sync::Arc;

use imstatus_config::{AccountConfig, PersonConfig};
use imstatus_core::{AccountId, CodedError, SourceKind};
use imstatus_hub::{BoxFuture, Check, KeyError, Keys, Source, SourceFactory, SourceSettings};

pub use source::{PersonSource, COMMANDS, WRITE_TIMEOUT};

/// The source kind of a person, `"person"`.
pub const KIND: SourceKind = SourceKind::new_static("person");

/// The `source = "person"` kind: it has a title and a description, and refuses to be written
/// as an `[[account]]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PersonFactory;

impl SourceFactory for PersonFactory {
    fn kind(&self) -> SourceKind {
        KIND
    }

    fn title(&self) -> &'static str {
        "Person (accounts combined)"
    }

    fn description(&self) -> &'static str {
        "several accounts combined into one answer ([[person]], not [[account]])"
    }

    fn keys(&self) -> &'static [&'static str] {
        &[]
    }

    fn resolve(&self, keys: &mut Keys) -> Result<Box<dyn SourceSettings>, KeyError> {
        Err(keys.error(
            keys.line(),
            format!(
                "account `{}`: source \"person\" is not written in [[account]]; write a \
                 [[person]] with the accounts it combines (docs/person.md)",
                keys.account()
            ),
        ))
    }
}

/// A person's settings: its `[[person]]`.
#[derive(Debug, Clone)]
pub struct PersonSettings {
    config: PersonConfig,
}

impl PersonSettings {
    /// The settings of one `[[person]]`.
    pub fn new(config: PersonConfig) -> Self {
        PersonSettings { config }
    }

    /// The `[[person]]`.
    pub fn config(&self) -> &PersonConfig {
        &self.config
    }
}

impl SourceSettings for PersonSettings {
    fn build(&self, _account: &AccountId) -> Result<Arc<dyn Source>, CodedError> {
        Ok(Arc::new(PersonSource::new(&self.config)))
    }

    fn doctor(&self) -> BoxFuture<'_, Vec<Check>> {
        let c = &self.config;
        let list = |v: &[AccountId]| {
            v.iter()
                .map(AccountId::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut checks = vec![Check::pass(
            "accounts",
            format!("combines {} (each checked on its own)", list(&c.accounts)),
        )];
        if let Some(s) = &c.signals {
            checks.push(Check::pass("signals", format!("from {s}")));
        }
        if !c.sync.is_empty() {
            checks.push(Check::pass(
                "sync",
                format!("sets {} on a call or away", list(&c.sync)),
            ));
        }
        Box::pin(async move { checks })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A `[[person]]` as an account of kind `person`, for the binary's list of accounts.
pub fn account_config(config: &PersonConfig) -> AccountConfig {
    AccountConfig {
        name: config.name.clone(),
        kind: KIND,
        settings: Arc::new(PersonSettings::new(config.clone())),
    }
}
