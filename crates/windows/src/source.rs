//! Placeholder: the Windows source (see issue 9).

use std::sync::Arc;

use imstatus_hub::config::WindowsConfig;
use imstatus_hub::{BoxFuture, Check, Sink, Source};

/// Watches one Windows IM client.
pub struct WindowsSource {
    config: WindowsConfig,
}

impl WindowsSource {
    /// A source for the account's settings.
    pub fn new(config: &WindowsConfig) -> Self {
        WindowsSource {
            config: config.clone(),
        }
    }
}

impl Source for WindowsSource {
    fn kind(&self) -> imstatus_core::SourceKind {
        imstatus_core::SourceKind::Windows
    }

    fn run(self: Arc<Self>, sink: Sink) -> BoxFuture<'static, ()> {
        let _ = (&self.config, sink);
        Box::pin(std::future::pending())
    }
}

/// `imstatus doctor` for a Windows account.
pub async fn doctor(config: &WindowsConfig) -> Vec<Check> {
    let _ = config;
    Vec::new()
}
