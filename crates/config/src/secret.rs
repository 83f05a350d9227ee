//! Secrets (passwords, tokens): never on the command line, never in the config itself, never
//! in a log line. A secret comes from a private file or from a command's first output line.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use imstatus_hub::{KeyError, Keys, Spanned};

/// How long a `password_command` may run before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The most a secret file or a command's output may hold; more is an error, not a truncation.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Where a secret comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// A file (mode 0600 or stricter, owned by this user); trailing newlines are dropped.
    File(PathBuf),
    /// A command whose first output line is the secret (`pass show xmpp/alice`), run through
    /// the platform's shell with [`COMMAND_TIMEOUT`].
    Command(String),
}

/// Never shows a command line: it may carry a secret of its own.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::File(p) => f.debug_tuple("File").field(p).finish(),
            Secret::Command(_) => f.write_str("Command(..)"),
        }
    }
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The file could not be opened or read.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Group or others may read the file.
    #[error("{path}: readable by group or others (mode {mode:04o}); run `chmod 600 {path}`", path = path.display())]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Another user owns the file.
    #[error("{path}: owned by uid {owner}, not by this user (uid {me}); a secret must be the user's own file", path = path.display())]
    Owner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        me: u32,
    },
    /// Not a regular file.
    #[error("{path}: not a regular file", path = path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Larger than [`MAX_SECRET_BYTES`].
    #[error("{what}: more than {MAX_SECRET_BYTES} bytes; that is not a password")]
    TooLarge {
        /// The file or `password_command`.
        what: String,
    },
    /// The command could not start, failed, or ran too long.
    #[error("password_command: {0}")]
    Command(String),
}

impl Secret {
    /// Reads `file_key` (a private file) or `command_key` (a command), at most one of them.
    /// The file is checked now, so that a config error names its line; it is read again
    /// (and checked again) each time the secret is needed.
    pub fn from_keys(
        keys: &mut Keys,
        file_key: &str,
        command_key: Option<&str>,
    ) -> Result<Option<Spanned<Secret>>, KeyError> {
        let file = keys.path(file_key)?;
        let command = match command_key {
            Some(k) => keys.string(k)?,
            None => None,
        };
        match (file, command) {
            (Some(_), Some(c)) => Err(keys.error(
                c.line,
                format!(
                    "keys `{file_key}` and `{}`: give only one",
                    command_key.unwrap_or_default()
                ),
            )),
            (Some(f), None) => {
                check_private(&f.value)
                    .map_err(|e| keys.error(f.line, format!("key `{file_key}`: {e}")))?;
                Ok(Some(f.map(Secret::File)))
            }
            (None, Some(c)) => Ok(Some(c.map(Secret::Command))),
            (None, None) => Ok(None),
        }
    }

    /// Reads the secret. Blocking (a file read or a command): call it off the async runtime's
    /// workers (`spawn_blocking`).
    pub fn read(&self) -> Result<String, SecretError> {
        match self {
            Secret::File(path) => {
                let text = read_private(path)?;
                Ok(text.trim_end_matches(['\r', '\n']).to_owned())
            }
            Secret::Command(cmd) => run_command(cmd, COMMAND_TIMEOUT),
        }
    }
}

/// Opens `path` and checks the opened file itself (no race between the check and the read):
/// a regular file, owned by this user, that group and others cannot read.
fn open_private(path: &Path) -> Result<std::fs::File, SecretError> {
    let io = |source| SecretError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(SecretError::NotAFile {
            path: path.to_owned(),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(SecretError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != me && meta.uid() != 0 {
            return Err(SecretError::Owner {
                path: path.to_owned(),
                owner: meta.uid(),
                me,
            });
        }
    }
    Ok(file)
}

fn read_private(path: &Path) -> Result<String, SecretError> {
    let file = open_private(path)?;
    let mut text = String::new();
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|source| SecretError::Io {
            path: path.to_owned(),
            source,
        })?;
    if text.len() as u64 > MAX_SECRET_BYTES {
        return Err(SecretError::TooLarge {
            what: path.display().to_string(),
        });
    }
    Ok(text)
}

/// Refuses a secret file that is not a regular file of this user's that only the user can
/// read (Unix: none of the mode bits 0o077; owner = this user or root).
///
/// On Windows there are no mode bits, and the ACL is not inspected: the file only has to exist
/// and be a file. Keep it under the user's profile (`%APPDATA%\imstatus\`), whose default ACL
/// grants only the user, SYSTEM and Administrators.
pub fn check_private(path: &Path) -> Result<(), SecretError> {
    open_private(path).map(drop)
}

/// Runs `cmd` through the shell and returns its first output line; kills it (its whole process
/// group on Unix) after `timeout`.
fn run_command(cmd: &str, timeout: Duration) -> Result<String, SecretError> {
    let mut command = shell_command(cmd);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    let mut child = command
        .spawn()
        .map_err(|e| SecretError::Command(format!("cannot start the shell: {e}")))?;
    let Some(stdout) = child.stdout.take() else {
        return Err(SecretError::Command("no output pipe".into()));
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let read = stdout.take(MAX_SECRET_BYTES + 1).read_to_end(&mut out);
        let _ = tx.send(read.map(|_| out));
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            kill(&mut child);
            return Err(SecretError::Command(format!("reading its output: {e}")));
        }
        Err(_) => {
            kill(&mut child);
            return Err(SecretError::Command(format!(
                "still running after {} s; killed it",
                timeout.as_secs()
            )));
        }
    };
    if out.len() as u64 > MAX_SECRET_BYTES {
        kill(&mut child);
        return Err(SecretError::TooLarge {
            what: "password_command".into(),
        });
    }
    let status = child
        .wait()
        .map_err(|e| SecretError::Command(e.to_string()))?;
    if !status.success() {
        // Name the status, never the command line (it may hold a secret of its own).
        return Err(SecretError::Command(format!("exited with {status}")));
    }
    let text = String::from_utf8_lossy(&out);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

fn kill(child: &mut std::process::Child) {
    #[cfg(unix)]
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A command that runs `cmd` through the platform's shell: `sh -c CMD` on Unix; on Windows
/// `cmd.exe /D /V:ON /S /C "CMD"` (no AutoRun, delayed expansion so that `!VAR!` expands a
/// variable after the line is parsed, and the line passed to cmd verbatim rather than quoted
/// by Rust's argument rules, which cmd does not follow).
pub fn shell_command(cmd: &str) -> Command {
    #[cfg(windows)]
    {
        use std::os::windows::process::CommandExt;
        let mut c = Command::new("cmd.exe");
        c.raw_arg(format!("/D /V:ON /S /C \"{cmd}\""));
        c
    }
    #[cfg(not(windows))]
    {
        let mut c = Command::new("sh");
        c.arg("-c").arg(cmd);
        c
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn private(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("pw");
        std::fs::write(&p, text).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        p
    }

    #[test]
    fn a_private_file_is_read_without_its_trailing_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = private(dir.path(), "s3cret\n");
        assert_eq!(Secret::File(p).read().expect("read"), "s3cret");
    }

    #[test]
    fn a_file_others_can_read_is_refused_through_a_symlink_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = private(dir.path(), "s3cret\n");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&p, &link).expect("symlink");
        for path in [&p, &link] {
            let e = Secret::File(path.clone())
                .read()
                .expect_err("group-readable");
            assert!(e.to_string().contains("(mode 0640)"), "{e}");
        }
    }

    #[test]
    fn a_directory_or_a_huge_file_is_not_a_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let e = check_private(dir.path()).expect_err("a directory");
        assert!(matches!(e, SecretError::NotAFile { .. }), "{e}");
        let big = private(dir.path(), &"x".repeat(MAX_SECRET_BYTES as usize + 1));
        let e = Secret::File(big).read().expect_err("too large");
        assert!(matches!(e, SecretError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn a_command_gives_its_first_line_and_its_failure_never_shows_the_command() {
        let s = Secret::Command("printf 's3cret\\nsecond\\n'".into());
        assert_eq!(s.read().expect("runs"), "s3cret");
        let e = Secret::Command("echo hunter2 >/dev/null; exit 3".into())
            .read()
            .expect_err("fails");
        let text = e.to_string();
        assert!(text.contains("exited with"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!format!("{:?}", Secret::Command("pass hunter2".into())).contains("hunter2"));
    }

    #[test]
    fn a_command_that_hangs_is_killed_with_its_children_after_the_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("child.pid");
        let cmd = format!("sleep 600 & echo $! > {}; wait", pidfile.display());
        let started = std::time::Instant::now();
        let e = run_command(&cmd, Duration::from_millis(300)).expect_err("times out");
        assert!(e.to_string().contains("killed it"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let pid: u32 = std::fs::read_to_string(&pidfile)
            .expect("pid written")
            .trim()
            .parse()
            .expect("a pid");
        // The grandchild was in the killed process group: it is gone (or a zombie waiting for
        // init to reap it), never still sleeping.
        imstatus_testkit::wait_until("the command's child to die", Duration::from_secs(5), || {
            (!imstatus_testkit::pid_alive(pid)).then_some(())
        })
        .expect("the command's child survived");
    }
}
