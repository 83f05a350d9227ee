//! A private ejabberd on loopback, run as our own child process.
//!
//! Debian's `ejabberdctl` switches to the `ejabberd` user and needs a distributed Erlang node
//! (and so `epmd` on 0.0.0.0:4369). The testkit needs neither: it runs `erl` itself, as the
//! current user, without a node name (`nonode@nohost`, no distribution, no epmd), with the
//! config, Mnesia spool, logs and crash dumps in a temp dir. Users and rosters are created by
//! an `-eval` expression once ejabberd has started; it writes a `ready` file (or a `failed`
//! file with the error) when done. Only the c2s port listens, on 127.0.0.1, plaintext with
//! SASL PLAIN allowed, as the testkit's Prosody.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{find_program, kill_child, log_since, read_log, stop_child};
use crate::{free_port, try_wait_until, Error, Result};

/// The XMPP domain every testkit ejabberd serves.
const DOMAIN: &str = "example.test";
/// How long ejabberd may take to start, create its tables, users and rosters (~1.5 s here).
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long ejabberd gets after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(15);
/// How often [`Ejabberd::start`] picks a new port when another process took the chosen one.
const PORT_ATTEMPTS: usize = 5;
/// Where Debian (and other layouts) install ejabberd's Erlang application.
const LIB_PARENTS: [&str; 4] = [
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/erlang/lib",
    "/usr/local/lib/erlang/lib",
];

/// What [`Ejabberd::start`] sets up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EjabberdOptions {
    /// Accounts as (local part, password), registered at the first start.
    pub users: Vec<(String, String)>,
    /// Pairs of local parts written into each other's roster with subscription `both`.
    pub both: Vec<(String, String)>,
    /// Load `mod_privacy` (XEP-0016 privacy lists), as Debian's default config does.
    pub privacy: bool,
}

impl Default for EjabberdOptions {
    /// alice/alicepw, bob/bobpw, watcher/watcherpw; alice 'both' with watcher and bob;
    /// `mod_privacy` on. The same accounts as [`crate::ProsodyOptions::default`].
    fn default() -> Self {
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        EjabberdOptions {
            users: vec![
                pair("alice", "alicepw"),
                pair("bob", "bobpw"),
                pair("watcher", "watcherpw"),
            ],
            both: vec![pair("alice", "watcher"), pair("alice", "bob")],
            privacy: true,
        }
    }
}

/// A running (or stopped) private ejabberd serving `example.test` on one loopback port.
///
/// Dropping it stops the server (SIGTERM, SIGKILL after 15 s) and deletes its directory.
#[derive(Debug)]
pub struct Ejabberd {
    erl: PathBuf,
    libs: PathBuf,
    opts: EjabberdOptions,
    port: u16,
    child: Option<Child>,
    // Last, so that it is deleted after the server is stopped.
    dir: TempDir,
}

impl Ejabberd {
    /// Writes the config, starts ejabberd, registers the users and writes the rosters,
    /// returning once that is done and the c2s port accepts connections.
    pub fn start(opts: EjabberdOptions) -> Result<Ejabberd> {
        let erl = find_program("erl", "ejabberd")?;
        let libs = ejabberd_libs(&LIB_PARENTS).ok_or_else(|| Error::MissingModule {
            module: "the ejabberd Erlang application (ejabberd-*/ebin/ejabberd.app)".to_owned(),
            searched: LIB_PARENTS.join(", "),
            hint: "apt-get install -y ejabberd".to_owned(),
        })?;
        let dir = tempfile::Builder::new()
            .prefix("imstatus-ejabberd-")
            .tempdir()
            .map_err(|e| Error::io("creating ejabberd's temp dir", e))?;
        let mut server = Ejabberd {
            erl,
            libs,
            opts,
            port: free_port(),
            child: None,
            dir,
        };
        let mut attempt = 1;
        loop {
            server.reset_spool()?;
            server.write_config()?;
            match server.launch(true) {
                Err(Error::Command { what, .. })
                    if what == PORT_TAKEN && attempt < PORT_ATTEMPTS =>
                {
                    attempt += 1;
                    server.port = free_port();
                }
                other => return other.map(|()| server),
            }
        }
    }

    /// The c2s port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The served domain, `example.test`.
    pub fn domain(&self) -> &str {
        DOMAIN
    }

    /// `local@example.test`.
    pub fn jid(&self, local: &str) -> String {
        format!("{local}@{DOMAIN}")
    }

    /// The temp dir holding config, spool and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's PID (the Erlang VM, `beam.smp`) while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// ejabberd's log (info level and up), its error log, and what the VM printed.
    pub fn log(&self) -> String {
        let mut log = read_log(&self.path("ejabberd.log"));
        for (label, file) in [("error.log", "error.log"), ("stdout/stderr", "erl.out")] {
            let text = read_log(&self.path(file));
            if !text.trim().is_empty() {
                let _ = write!(log, "--- {label} ---\n{text}");
            }
        }
        log
    }

    /// Stops the server: SIGTERM (the VM shuts down in order), SIGKILL after 15 s, and reaps
    /// it. Does nothing if it is not running.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, "ejabberd", TERM_GRACE)?;
        }
        Ok(())
    }

    /// SIGKILLs the server and reaps it. Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill_child(&mut child, "ejabberd");
        }
    }

    /// Stops the server and starts it again on the same port with the same data.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.launch(false)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// An empty Mnesia spool (a fresh start after a failed attempt registers again).
    fn reset_spool(&self) -> Result<()> {
        let spool = self.path("spool");
        if spool.exists() {
            std::fs::remove_dir_all(&spool)
                .map_err(|e| Error::io(format!("removing {}", spool.display()), e))?;
        }
        std::fs::create_dir_all(&spool)
            .map_err(|e| Error::io(format!("creating {}", spool.display()), e))
    }

    fn write_config(&self) -> Result<()> {
        let config = config_yaml(self.port, self.opts.privacy);
        let path = self.path("ejabberd.yml");
        std::fs::write(&path, config)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }

    /// Spawns the VM and waits for the `ready` file and the c2s port.
    fn launch(&mut self, register: bool) -> Result<()> {
        for marker in ["ready", "failed"] {
            let _ = std::fs::remove_file(self.path(marker));
        }
        let log_start = std::fs::metadata(self.path("ejabberd.log"))
            .map(|m| m.len())
            .unwrap_or(0);
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("erl.out"))
            .map_err(|e| Error::io("opening erl.out", e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io("duplicating erl.out", e))?;
        let (users, both): (&[_], &[_]) = if register {
            (&self.opts.users, &self.opts.both)
        } else {
            (&[], &[])
        };
        let init = init_expression(users, both, &self.path("ready"), &self.path("failed"));
        let child = Command::new(&self.erl)
            .args(["-noinput", "-noshell", "+K", "true"])
            // No busy-waiting schedulers: several VMs share two cores in a test run.
            .args(["+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none"])
            .args(["-mnesia", "dir"])
            .arg(erl_string(&self.path("spool").to_string_lossy()))
            .args(["-s", "ejabberd", "-eval", &init])
            .env("EJABBERD_CONFIG_PATH", self.path("ejabberd.yml"))
            .env("EJABBERD_LOG_PATH", self.path("ejabberd.log"))
            .env("CONTRIB_MODULES_PATH", self.path("contrib"))
            .env("ERL_LIBS", &self.libs)
            .env("ERL_CRASH_DUMP", self.path("erl_crash.dump"))
            .env("ERL_CRASH_DUMP_BYTES", "0")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| Error::io("spawning erl (ejabberd)", e))?;
        let child = self.child.insert(child);

        let port = self.port;
        let dir = self.dir.path().to_owned();
        let waited = try_wait_until(
            &format!("ejabberd to listen on 127.0.0.1:{port} with its users"),
            START_DEADLINE,
            || {
                if let Some(status) = child
                    .try_wait()
                    .map_err(|e| Error::io("reaping ejabberd", e))?
                {
                    return Err(Error::Exited {
                        what: "ejabberd".into(),
                        status: status.to_string(),
                        context: String::new(),
                    });
                }
                let log = log_since(&dir.join("ejabberd.log"), log_start);
                if log.contains("eaddrinuse") {
                    return Err(Error::Command {
                        what: PORT_TAKEN.into(),
                        status: format!("port {port} in use"),
                        output: log,
                    });
                }
                if let Ok(failed) = std::fs::read_to_string(dir.join("failed")) {
                    return Err(Error::Command {
                        what: "ejabberd's setup (-eval: users and rosters)".into(),
                        status: "error".into(),
                        output: failed,
                    });
                }
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                Ok((dir.join("ready").exists()
                    && TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok())
                .then_some(()))
            },
        );
        if let Err(e) = waited {
            self.kill();
            return Err(e.with_log("ejabberd.log", &self.log()));
        }
        Ok(())
    }
}

impl Drop for Ejabberd {
    fn drop(&mut self) {
        if self.stop().is_err() {
            self.kill();
        }
    }
}

/// The `what` of the internal error that makes [`Ejabberd::start`] pick another port.
const PORT_TAKEN: &str = "ejabberd: c2s port taken by another process";

/// The first of `parents` that holds an `ejabberd-*/ebin/ejabberd.app` (for `ERL_LIBS`).
fn ejabberd_libs(parents: &[&str]) -> Option<PathBuf> {
    parents.iter().map(PathBuf::from).find(|parent| {
        std::fs::read_dir(parent).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                e.file_name().to_string_lossy().starts_with("ejabberd-")
                    && e.path().join("ebin/ejabberd.app").is_file()
            })
        })
    })
}

/// The config: one c2s listener on 127.0.0.1:`port`, plaintext, PLAIN allowed, internal
/// plain-text password storage, and only the modules the tests use.
fn config_yaml(port: u16, privacy: bool) -> String {
    let privacy = if privacy { "  mod_privacy: {}\n" } else { "" };
    format!(
        "# written by imstatus-testkit\n\
         hosts: [\"{DOMAIN}\"]\n\
         loglevel: info\n\
         log_rotate_count: 0\n\
         certfiles: []\n\
         listen:\n\
         \x20 -\n\
         \x20   port: {port}\n\
         \x20   ip: \"127.0.0.1\"\n\
         \x20   module: ejabberd_c2s\n\
         \x20   max_stanza_size: 262144\n\
         \x20   access: c2s\n\
         \x20   starttls_required: false\n\
         auth_method: internal\n\
         auth_password_format: plain\n\
         acl:\n\
         \x20 local:\n\
         \x20   user_regexp: \"\"\n\
         access_rules:\n\
         \x20 local:\n\
         \x20   allow: local\n\
         \x20 c2s:\n\
         \x20   allow: all\n\
         shaper_rules:\n\
         \x20 max_user_sessions: 10\n\
         modules:\n\
         \x20 mod_roster: {{}}\n\
         \x20 mod_disco: {{}}\n\
         \x20 mod_ping: {{}}\n\
         \x20 mod_admin_extra: {{}}\n\
         {privacy}"
    )
}

/// An Erlang string literal.
fn erl_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// An Erlang binary literal `<<"…">>`.
fn erl_binary(s: &str) -> String {
    format!("<<{}>>", erl_string(s))
}

/// The `-eval` expression: register `users`, write `both` roster pairs, then create `ready`
/// (or `failed` with the error).
fn init_expression(
    users: &[(String, String)],
    both: &[(String, String)],
    ready: &Path,
    failed: &Path,
) -> String {
    let host = erl_binary(DOMAIN);
    let users: Vec<String> = users
        .iter()
        .map(|(u, p)| format!("{{{}, {}}}", erl_binary(u), erl_binary(p)))
        .collect();
    let pairs: Vec<String> = both
        .iter()
        .flat_map(|(a, b)| [(a, b), (b, a)])
        .map(|(a, b)| format!("{{{}, {}}}", erl_binary(a), erl_binary(b)))
        .collect();
    format!(
        "H = {host}, \
         try \
           [ok = ejabberd_auth:try_register(U, H, P) || {{U, P}} <- [{users}]], \
           [ok = mod_admin_extra:add_rosteritem(A, H, B, H, B, <<>>, <<\"both\">>) \
              || {{A, B}} <- [{pairs}]], \
           ok = file:write_file({ready}, <<\"ok\">>) \
         catch C:R:S -> \
           file:write_file({failed}, io_lib:format(\"~p:~p~n~p~n\", [C, R, S])) \
         end.",
        users = users.join(", "),
        pairs = pairs.join(", "),
        ready = erl_string(&ready.to_string_lossy()),
        failed = erl_string(&failed.to_string_lossy()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erlang_literals_are_escaped() {
        assert_eq!(erl_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(erl_binary("alice"), r#"<<"alice">>"#);
    }

    #[test]
    fn the_init_expression_registers_users_and_writes_both_directions() {
        let e = init_expression(
            &[("alice".into(), "alicepw".into())],
            &[("alice".into(), "bob".into())],
            Path::new("/t/ready"),
            Path::new("/t/failed"),
        );
        assert!(e.contains(r#"[{<<"alice">>, <<"alicepw">>}]"#), "{e}");
        assert!(
            e.contains(r#"[{<<"alice">>, <<"bob">>}, {<<"bob">>, <<"alice">>}]"#),
            "{e}"
        );
        assert!(e.contains(r#"file:write_file("/t/ready""#), "{e}");
        assert!(e.ends_with("end."), "{e}");
    }

    #[test]
    fn the_config_listens_on_loopback_only_and_privacy_is_optional() {
        let c = config_yaml(15222, true);
        assert!(
            c.contains("    port: 15222\n    ip: \"127.0.0.1\"\n"),
            "{c}"
        );
        assert!(c.contains("  mod_privacy: {}\n"), "{c}");
        assert_eq!(c.matches("port:").count(), 1, "only c2s listens: {c}");
        assert!(!config_yaml(15222, false).contains("mod_privacy"));
    }

    #[test]
    fn the_library_dir_is_found_by_its_app_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = dir.path().join("lib/ejabberd-99.1/ebin");
        std::fs::create_dir_all(&app).expect("mkdir");
        assert_eq!(
            ejabberd_libs(&[&dir.path().join("lib").to_string_lossy()]),
            None
        );
        std::fs::write(app.join("ejabberd.app"), "").expect("write");
        let lib = dir.path().join("lib");
        assert_eq!(
            ejabberd_libs(&["/nonexistent", &lib.to_string_lossy()]),
            Some(lib)
        );
    }
}
