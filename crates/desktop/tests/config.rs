//! The factory as the config reader uses it.

use imstatus_core::AccountId;
use imstatus_desktop::{DesktopConfig, DesktopFactory};
use imstatus_hub::{Keys, SourceFactory, Value};

#[test]
fn the_factory_resolves_settings_that_build_a_desktop_source() {
    let mut keys = Keys::new(AccountId::new("desk"), 2)
        .with("microphone", Value::Boolean(true))
        .with("idle_after", Value::String("2m".into()));
    let settings = DesktopFactory.resolve(&mut keys).expect("valid");
    assert_eq!(keys.unread(), vec![]);
    let config = settings
        .as_any()
        .downcast_ref::<DesktopConfig>()
        .expect("a DesktopConfig");
    assert!(config.microphone && !config.camera && !config.idle && !config.lock);
    assert_eq!(config.idle_after, std::time::Duration::from_secs(120));
    let source = settings.build(&AccountId::new("desk")).expect("builds");
    assert_eq!(source.kind(), DesktopFactory.kind());
}

#[test]
fn all_signals_off_is_refused_on_the_account_line() {
    let mut keys = Keys::new(AccountId::new("desk"), 7).with("camera", Value::Boolean(false));
    let err = DesktopFactory
        .resolve(&mut keys)
        .expect_err("nothing enabled");
    assert_eq!(
        err.to_string(),
        "line 7: account `desk`: enable at least one of microphone, camera, idle, lock"
    );
}
