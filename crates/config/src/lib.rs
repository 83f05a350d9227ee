//! imstatus configuration: the config file, secrets, `[serve]` and `[mqtt]`.
//!
//! Each source reads its own `[[account]]` keys (see [`imstatus_hub::SourceFactory`]); this
//! crate owns what is not a source's: finding the file, reading it with line numbers, secrets,
//! the gateway's and MQTT's sections.

pub mod secret;

pub use secret::{check_private, shell_command, Secret, SecretError};
