//! The sources compiled into this binary: the one place that names them. Each source crate
//! exports a [`SourceFactory`]; adding a source is a line in [`factories`] and its cargo
//! feature.
//!
//! A source this build lacks (its feature is off, or its platform is another) still has an
//! entry: it reads any keys, and building it says why it is missing, so a config written for
//! another build or platform gives a clear message instead of "unknown source".
//!
//! Persons (`[[person]]`) are in every build: [`with_persons`] makes each one an account of
//! source `person`, so that every command treats it as one.

use std::any::Any;
use std::sync::Arc;

use imstatus_config::Config;
use imstatus_core::{AccountId, CodedError, ErrorCode, SourceKind};
use imstatus_hub::{BoxFuture, Check, KeyError, Keys, Source, SourceFactory, SourceSettings};

/// Every source of this build, then the absent ones (in docs order).
pub fn factories() -> Vec<&'static dyn SourceFactory> {
    let mut list: Vec<&'static dyn SourceFactory> = vec![
        #[cfg(all(unix, feature = "purple"))]
        &imstatus_purple::PurpleFactory,
        #[cfg(feature = "xmpp")]
        &imstatus_xmpp::XmppFactory,
        #[cfg(feature = "matrix")]
        &imstatus_matrix::MatrixFactory,
        #[cfg(all(unix, feature = "desktop"))]
        &imstatus_desktop::DesktopFactory,
        #[cfg(feature = "windows")]
        &imstatus_windows::WindowsFactory,
        #[cfg(all(unix, feature = "teams"))]
        &imstatus_teams::TeamsFactory,
        &imstatus_person::PersonFactory,
    ];
    list.extend(
        ABSENT
            .iter()
            .filter(|a| !a.present)
            .map(|a| a as &dyn SourceFactory),
    );
    list
}

/// The config with each `[[person]]` added to its accounts (after the `[[account]]`s), as an
/// account of source `person`.
pub fn with_persons(mut config: Config) -> Config {
    let persons: Vec<_> = config
        .persons
        .iter()
        .map(imstatus_person::account_config)
        .collect();
    config.accounts.extend(persons);
    config
}

/// A source kind this build may lack, and why.
struct Absent {
    kind: SourceKind,
    present: bool,
    why: &'static str,
}

const ABSENT: &[Absent] = &[
    Absent {
        kind: SourceKind::new_static("purple"),
        present: cfg!(all(unix, feature = "purple")),
        why: if cfg!(unix) {
            "built without its cargo feature"
        } else {
            "libpurple over D-Bus is Unix-only"
        },
    },
    Absent {
        kind: SourceKind::new_static("xmpp"),
        present: cfg!(feature = "xmpp"),
        why: "built without its cargo feature",
    },
    Absent {
        kind: SourceKind::new_static("matrix"),
        present: cfg!(feature = "matrix"),
        why: "built without its cargo feature",
    },
    Absent {
        kind: SourceKind::new_static("desktop"),
        present: cfg!(all(unix, feature = "desktop")),
        why: if cfg!(unix) {
            "built without its cargo feature"
        } else {
            "the desktop signals are Linux-only"
        },
    },
    Absent {
        kind: SourceKind::new_static("windows"),
        present: cfg!(feature = "windows"),
        why: "built without its cargo feature",
    },
    Absent {
        kind: SourceKind::new_static("teams-for-linux"),
        present: cfg!(all(unix, feature = "teams")),
        why: if cfg!(unix) {
            "built without its cargo feature"
        } else {
            "teams-for-linux is a Linux client; on Windows use source = \"windows\""
        },
    },
];

#[derive(Debug)]
struct Missing {
    kind: SourceKind,
    why: &'static str,
}

impl Missing {
    fn message(&self) -> String {
        format!(
            "this build of imstatus has no `{}` source ({})",
            self.kind, self.why
        )
    }
}

impl SourceFactory for Absent {
    fn kind(&self) -> SourceKind {
        self.kind.clone()
    }

    fn title(&self) -> &'static str {
        "a source this build lacks"
    }

    fn description(&self) -> &'static str {
        self.why
    }

    fn keys(&self) -> &'static [&'static str] {
        &[]
    }

    fn resolve(&self, keys: &mut Keys) -> Result<Box<dyn SourceSettings>, KeyError> {
        keys.read_all();
        Ok(Box::new(Missing {
            kind: self.kind.clone(),
            why: self.why,
        }))
    }
}

impl SourceSettings for Missing {
    fn build(&self, _account: &AccountId) -> Result<Arc<dyn Source>, CodedError> {
        Err(CodedError::new(ErrorCode::Unsupported, self.message()))
    }

    fn doctor(&self) -> BoxFuture<'_, Vec<Check>> {
        let hint = if self.why.contains("only") {
            "use a source this platform has (see docs/config.md)"
        } else {
            "rebuild with the source's cargo feature"
        };
        let message = self
            .message()
            .replace("this build of imstatus", "this build");
        Box::pin(async move { vec![Check::fail("source", message, hint)] })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `--help`'s list of the sources of this build.
pub fn help() -> String {
    let mut text = String::from("Sources in this build (`source = \"…\"` in the config):\n");
    for f in factories() {
        if ABSENT.iter().any(|a| !a.present && a.kind == f.kind()) {
            continue;
        }
        text.push_str(&format!("  {:<15} {}\n", f.kind(), f.description()));
    }
    text.push_str("See docs/config.md; docs/sources.md says how to add one.");
    text
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Result<Config, imstatus_config::ConfigError> {
        Config::parse(text, Path::new("cfg.toml"), &factories())
    }

    #[test]
    fn every_kind_is_listed_once() {
        let kinds: Vec<SourceKind> = factories().iter().map(|f| f.kind()).collect();
        let mut unique = kinds.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(kinds.len(), unique.len(), "{kinds:?}");
        for k in [
            "purple",
            "xmpp",
            "matrix",
            "desktop",
            "windows",
            "teams-for-linux",
            "person",
        ] {
            assert!(kinds.iter().any(|x| x == k), "{k} missing from {kinds:?}");
        }
    }

    #[cfg(all(unix, feature = "purple", feature = "xmpp"))]
    #[test]
    fn a_key_of_another_source_is_refused_naming_its_source() {
        for key in [
            "jid = \"a@b\"",
            "visibility = \"visible\"",
            "watch_as = \"contact\"",
            "watcher_jid = \"w@example.test\"",
            "watcher_password_command = \"echo\"",
        ] {
            let e = parse(&format!(
                "[[account]]\nname = \"a\"\nsource = \"purple\"\n{key}\n"
            ))
            .expect_err("an xmpp key")
            .to_string();
            let k = key.split(' ').next().unwrap_or_default();
            assert_eq!(
                e,
                format!(
                    "cfg.toml:4: key `{k}` does not apply to source \"purple\" (it is a key of source \"xmpp\")"
                ),
            );
        }
        let e = parse("[[account]]\nname = \"a\"\nsource = \"purple\"\napp = \"Teams\"\n")
            .expect_err("a windows key")
            .to_string();
        assert_eq!(
            e,
            "cfg.toml:4: key `app` does not apply to source \"purple\" (it is a key of source \"windows\")"
        );
        let e = parse("[[account]]\nname = \"a\"\nsource = \"windows\"\nbus = \"unix:path=/x\"\n")
            .expect_err("a purple key")
            .to_string();
        assert_eq!(
            e,
            if cfg!(feature = "teams") {
                "cfg.toml:4: key `bus` does not apply to source \"windows\" (it is a key of sources \"purple\" or \"teams-for-linux\")"
            } else {
                "cfg.toml:4: key `bus` does not apply to source \"windows\" (it is a key of source \"purple\")"
            }
        );
    }

    #[test]
    fn the_zero_config_default_is_this_platforms_client() {
        let c = Config::default_local(&factories()).expect("default");
        let expected = if cfg!(windows) { "windows" } else { "purple" };
        assert_eq!(c.accounts.len(), 1);
        assert_eq!(c.accounts[0].name.as_str(), expected);
        assert_eq!(c.accounts[0].kind, expected);
    }

    #[test]
    fn persons_become_accounts_and_are_never_written_as_accounts() {
        let c = parse(
            "[[account]]\nname = \"alice\"\nsource = \"xmpp\"\njid = \"a@b.test\"\n\
             password_command = \"echo x\"\n\
             [[person]]\nname = \"me\"\naccounts = [\"alice\"]\n",
        )
        .expect("valid");
        let c = with_persons(c);
        let names: Vec<&str> = c.accounts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["alice", "me"]);
        assert_eq!(c.accounts[1].kind, imstatus_person::KIND);
        let e = parse("[[account]]\nname = \"me\"\nsource = \"person\"\n")
            .expect_err("not an [[account]]")
            .to_string();
        assert!(
            e.starts_with(
                "cfg.toml:2: account `me`: source \"person\" is not written in [[account]]"
            ),
            "{e}"
        );
    }

    #[test]
    fn help_lists_the_sources_of_this_build() {
        let h = help();
        assert!(h.contains("  xmpp            an XMPP account"), "{h}");
        #[cfg(all(unix, feature = "teams"))]
        assert!(
            h.contains("  teams-for-linux Teams for Linux (teams-for-linux): presence and call"),
            "{h}"
        );
    }
}
