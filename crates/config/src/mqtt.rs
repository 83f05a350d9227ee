//! `[mqtt]`: the broker and Home Assistant discovery.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use crate::{ConfigError, Resolver, Secret};

/// MQTT settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    /// Broker URL (`mqtt://host:port`, or `mqtts://host:port` for TLS).
    pub url: String,
    /// Home Assistant discovery prefix (`homeassistant`).
    pub discovery_prefix: String,
    /// Prefix of imstatus's own topics (`imstatus`).
    pub topic_prefix: String,
    /// MQTT client id; `None` = `imstatus-<pid>-<random>`.
    pub client_id: Option<String>,
    /// User name for the broker.
    pub username: Option<String>,
    /// Password for the broker (needs `username`).
    pub password: Option<Secret>,
    /// Extra trusted root for `mqtts://` (PEM).
    pub ca_file: Option<PathBuf>,
}

impl MqttConfig {
    /// The defaults for a broker at `url`: discovery prefix `homeassistant`, topic prefix
    /// `imstatus`, no credentials.
    pub fn new(url: impl Into<String>) -> Self {
        MqttConfig {
            url: url.into(),
            discovery_prefix: "homeassistant".to_owned(),
            topic_prefix: "imstatus".to_owned(),
            client_id: None,
            username: None,
            password: None,
            ca_file: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMqtt {
    url: Spanned<String>,
    discovery_prefix: Option<Spanned<String>>,
    topic_prefix: Option<Spanned<String>>,
    client_id: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    pub(crate) password_command: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
}

impl Resolver<'_> {
    /// `[mqtt]`. The URL and topic syntax are checked by the MQTT client when it starts; here,
    /// which keys go together.
    pub(crate) fn mqtt(&self, m: RawMqtt) -> Result<MqttConfig, ConfigError> {
        let password = self.secret(
            m.password_file,
            m.password_command,
            "password_file",
            "password_command",
        )?;
        if let (Some((_, span)), None) = (&password, &m.username) {
            return Err(self.err(
                span.clone(),
                "key `password_file`/`password_command` needs `username`",
            ));
        }
        let tls = m.url.get_ref().starts_with("mqtts://") || m.url.get_ref().starts_with("ssl://");
        if let (Some(ca), false) = (&m.ca_file, tls) {
            return Err(self.err(
                ca.span(),
                "key `ca_file` needs a TLS `url` (mqtts://host:port)",
            ));
        }
        let mut config = MqttConfig::new(m.url.into_inner());
        if let Some(p) = m.discovery_prefix {
            config.discovery_prefix = p.into_inner();
        }
        if let Some(p) = m.topic_prefix {
            config.topic_prefix = p.into_inner();
        }
        config.client_id = m.client_id.map(Spanned::into_inner);
        config.username = m.username.map(Spanned::into_inner);
        config.password = password.map(|(p, _)| p);
        config.ca_file = m.ca_file.as_ref().map(|c| self.path_value(c));
        Ok(config)
    }
}
