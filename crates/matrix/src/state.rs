//! The login kept across restarts: `<state dir>/<account>.json` holds the device and access
//! token the source created, mode 0600 in a 0700 directory, so that every run reuses one
//! device instead of adding a new one to the user's device list.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The crate's error: the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading, writing or creating the file or its directory failed.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// There is no state directory (neither `XDG_STATE_HOME` nor `HOME` is set).
    #[error("no state directory: set XDG_STATE_HOME or HOME")]
    NoStateDir,
}

/// What one login gave, and for which user on which homeserver.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLogin {
    /// The homeserver's base URL.
    pub homeserver: String,
    /// The user.
    pub user_id: String,
    /// The device the source created.
    pub device_id: String,
    /// Its access token.
    pub access_token: String,
}

/// Never shows the token.
impl fmt::Debug for StoredLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredLogin")
            .field("homeserver", &self.homeserver)
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .field("access_token", &"…")
            .finish()
    }
}

/// The largest state file read (a login is ~300 bytes).
const MAX_STATE_BYTES: u64 = 16 * 1024;

impl StoredLogin {
    /// Reads the stored login; `None` when there is none or it cannot be used (unreadable,
    /// readable by others, not JSON). Blocking.
    pub fn load(path: &Path) -> Option<StoredLogin> {
        use std::io::Read as _;
        let file = std::fs::File::open(path).ok()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let meta = file.metadata().ok()?;
            if !meta.is_file() || meta.mode() & 0o077 != 0 {
                return None;
            }
        }
        let mut text = String::new();
        file.take(MAX_STATE_BYTES).read_to_string(&mut text).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes the login: a private temporary file in the same directory, renamed over the old
    /// one. Blocking.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io { path, source }
        };
        let dir = path.parent().ok_or(Error::NoStateDir)?;
        create_private_dir(dir).map_err(io(dir))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let text = serde_json::to_string(self).unwrap_or_default();
        let written = options.open(&tmp).and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::Io {
                path: tmp,
                source: e,
            });
        }
        std::fs::rename(&tmp, path).map_err(io(path))
    }

    /// Removes the stored login (its token was refused). Blocking.
    pub fn forget(path: &Path) {
        let _ = std::fs::remove_file(path);
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login() -> StoredLogin {
        StoredLogin {
            homeserver: "http://127.0.0.1:8008".into(),
            user_id: "@alice:example.test".into(),
            device_id: "ABCDEF".into(),
            access_token: "syt_secret".into(),
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_saved_login_is_private_and_loads_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state/matrix/alice.json");
        login().save(&path).expect("save");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(path.parent().expect("dir"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        assert_eq!(StoredLogin::load(&path), Some(login()));
        // Readable by others: not used.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(StoredLogin::load(&path), None);
        StoredLogin::forget(&path);
        assert!(!path.exists());
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        assert!(!format!("{:?}", login()).contains("syt_secret"));
    }
}
