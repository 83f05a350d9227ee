//! finch (libpurple's text UI) in tmux on a private bus (recipe §3, §4).

use std::fmt::Write as _;
use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::dbus::{dbus_send_call, name_has_owner};
use crate::process::{children_named, find_program, read_log, run, ProcId};
use crate::xmpp::escape;
use crate::{try_wait_until, DbusDaemon, Error, Result};

/// libpurple's well-known bus name.
pub const PURPLE_SERVICE: &str = "im.pidgin.purple.PurpleService";
/// libpurple's object path.
const PURPLE_PATH: &str = "/im/pidgin/purple/PurpleObject";
/// libpurple's interface.
const PURPLE_INTERFACE: &str = "im.pidgin.purple.PurpleInterface";
/// The tmux session name.
const SESSION: &str = "finch";
/// How long finch may take to appear under tmux.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long finch gets after Alt-q before SIGTERM (recipe §8).
const QUIT_GRACE: Duration = Duration::from_secs(10);
/// How long finch gets after SIGTERM before SIGKILL, and after SIGKILL (recipe §8).
const TERM_GRACE: Duration = Duration::from_secs(5);
/// How long the tmux server gets after `kill-server` before SIGKILL.
const TMUX_GRACE: Duration = Duration::from_secs(3);

/// An argument of a libpurple D-Bus method (objects are `Int` handles, booleans `Int` 0/1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbusArg {
    /// An `int32`.
    Int(i32),
    /// A `string`; `""` reaches libpurple as NULL.
    Str(String),
}

impl DbusArg {
    fn to_dbus_send(&self) -> String {
        match self {
            DbusArg::Int(i) => format!("int32:{i}"),
            DbusArg::Str(s) => format!("string:{s}"),
        }
    }
}

impl From<i32> for DbusArg {
    fn from(i: i32) -> Self {
        DbusArg::Int(i)
    }
}

impl From<&str> for DbusArg {
    fn from(s: &str) -> Self {
        DbusArg::Str(s.to_owned())
    }
}

/// One XMPP account for finch's `accounts.xml`, connecting to 127.0.0.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinchAccount {
    /// Full JID, e.g. `alice@example.test/finch`.
    pub jid_with_resource: String,
    /// The password, saved in `accounts.xml`.
    pub password: String,
    /// Prosody's c2s port on 127.0.0.1.
    pub port: u16,
    /// `None`: plaintext (`opportunistic_tls`, `auth_plain_in_clear`, P9). `Some(pem)`:
    /// `require_tls`, with the server certificate seeded as
    /// `certificates/x509/tls_peers/127.0.0.1` (P8). All TLS accounts of one finch must share
    /// one certificate.
    pub tls_cert: Option<PathBuf>,
}

/// A finch process in a tmux session on its own socket, using a private bus.
///
/// Every [`Finch::start`] and [`Finch::restart`] copies a fresh config dir (P10). Dropping it
/// quits finch (Alt-q; SIGTERM after 10 s; SIGKILL after 5 more) and then kills the tmux
/// server on its socket.
#[derive(Debug)]
pub struct Finch {
    finch: PathBuf,
    tmux: PathBuf,
    dbus_send: PathBuf,
    bus_address: String,
    account_count: usize,
    socket: PathBuf,
    template: PathBuf,
    run_dir: PathBuf,
    log: PathBuf,
    exit_file: PathBuf,
    /// Set by every successful launch; `None` only while [`Finch::start`] runs.
    pid: Option<ProcId>,
    tmux_server: Option<ProcId>,
    // Last, so that it is deleted after finch is stopped.
    dir: TempDir,
}

impl Finch {
    /// Writes a config dir for `accounts` and launches finch in tmux with
    /// `DBUS_SESSION_BUS_ADDRESS` set to `bus`; returns once finch's PID is known (it may not
    /// be on the bus yet: see [`Finch::wait_running`]).
    pub fn start(bus: &DbusDaemon, accounts: &[FinchAccount]) -> Result<Finch> {
        let finch = find_program("finch", "finch")?;
        let tmux = find_program("tmux", "tmux")?;
        let dbus_send = find_program("dbus-send", "dbus")?;
        let dir = tempfile::Builder::new()
            .prefix("imstatus-finch-")
            .tempdir()
            .map_err(|e| Error::io("creating finch's temp dir", e))?;
        let t = dir.path();
        let template = t.join("template");
        write_template(&template, accounts)?;
        let mut this = Finch {
            finch,
            tmux,
            dbus_send,
            bus_address: bus.address().to_owned(),
            account_count: accounts.len(),
            socket: t.join("tmux.sock"),
            template,
            run_dir: t.join("finch"),
            log: t.join("finch.log"),
            exit_file: t.join("finch.exit"),
            pid: None,
            tmux_server: None,
            dir,
        };
        // On failure `Drop` kills what tmux still runs.
        this.pid = Some(this.launch()?);
        Ok(this)
    }

    /// Waits until finch owns `im.pidgin.purple.PurpleService` on the bus.
    pub fn wait_running(&self, d: Duration) -> Result<()> {
        try_wait_until(&format!("finch to own {PURPLE_SERVICE}"), d, || {
            self.check_running()?;
            name_has_owner(&self.dbus_send, &self.bus_address, PURPLE_SERVICE)
                .map(|b| b.then_some(()))
        })
        .map_err(|e| self.with_context(e))
    }

    /// Waits until finch has as many active accounts as it was started with and
    /// `PurpleAccountIsConnected` is 1 for each.
    pub fn wait_signed_in(&self, d: Duration) -> Result<()> {
        let mut last = String::from("no reply yet");
        let result = try_wait_until("finch's accounts to be connected", d, || {
            self.check_running()?;
            match self.connected_state() {
                Ok((true, _)) => Ok(Some(())),
                Ok((false, state)) => {
                    last = state;
                    Ok(None)
                }
                Err(e) => {
                    last = e.to_string();
                    Ok(None)
                }
            }
        });
        result.map_err(|e| self.with_context(e).with_log("last state", &last))
    }

    /// Calls `im.pidgin.purple.PurpleInterface.<method>` with `dbus-send --print-reply`;
    /// returns the reply body, header line removed and each line trimmed (`int32 86`,
    /// `string "2.14.12"`, or `array [` … `]` with one element per line; empty for no value).
    pub fn purple_call(&self, method: &str, args: &[DbusArg]) -> Result<String> {
        let args: Vec<String> = args.iter().map(DbusArg::to_dbus_send).collect();
        dbus_send_call(
            &self.dbus_send,
            &self.bus_address,
            PURPLE_SERVICE,
            PURPLE_PATH,
            &format!("{PURPLE_INTERFACE}.{method}"),
            &args,
        )
    }

    /// [`Finch::purple_call`] for a method returning one `int32` (a handle, boolean or number).
    pub fn purple_int(&self, method: &str, args: &[DbusArg]) -> Result<i32> {
        let reply = self.purple_call(method, args)?;
        parse_ints(&reply)
            .first()
            .copied()
            .ok_or_else(|| Error::Dbus {
                method: method.to_owned(),
                message: format!("expected an int32, got {reply:?}"),
            })
    }

    /// [`Finch::purple_call`] for a method returning an array of `int32` handles.
    pub fn purple_ints(&self, method: &str, args: &[DbusArg]) -> Result<Vec<i32>> {
        Ok(parse_ints(&self.purple_call(method, args)?))
    }

    /// [`Finch::purple_call`] for a method returning a string.
    pub fn purple_string(&self, method: &str, args: &[DbusArg]) -> Result<String> {
        let reply = self.purple_call(method, args)?;
        reply
            .strip_prefix("string \"")
            .and_then(|s| s.strip_suffix('"'))
            .map(str::to_owned)
            .ok_or_else(|| Error::Dbus {
                method: method.to_owned(),
                message: format!("expected a string, got {reply:?}"),
            })
    }

    /// Sets the global status as `purple-remote setstatus` does (recipe §4): find or create a
    /// transient saved status of `primitive` (5 = away, 3 = dnd …) with `message` (`None`: no
    /// message), then activate it.
    pub fn set_status(&self, primitive: i32, message: Option<&str>) -> Result<()> {
        let text = message.unwrap_or("");
        let mut saved = self.purple_int(
            "PurpleSavedstatusFindTransientByTypeAndMessage",
            &[DbusArg::Int(primitive), text.into()],
        )?;
        if saved == 0 {
            saved = self.purple_int(
                "PurpleSavedstatusNew",
                &["".into(), DbusArg::Int(primitive)],
            )?;
            if saved == 0 {
                return Err(Error::Dbus {
                    method: "PurpleSavedstatusNew".into(),
                    message: format!("returned no status for primitive {primitive}"),
                });
            }
            if let Some(message) = message {
                self.purple_call(
                    "PurpleSavedstatusSetMessage",
                    &[DbusArg::Int(saved), message.into()],
                )?;
            }
        }
        self.purple_call("PurpleSavedstatusActivate", &[DbusArg::Int(saved)])?;
        Ok(())
    }

    /// Quits finch with Alt-q (a clean `</stream:stream>`, exit 0), falling back to SIGTERM
    /// after 10 s and SIGKILL after 5 more; returns its exit code (also if it had exited
    /// already).
    pub fn quit(&mut self) -> Result<i32> {
        if let Some(code) = self.exit_code() {
            return Ok(code);
        }
        // A failure here (finch just died) shows up as the exit code below.
        let _ = self.tmux(&["send-keys", "-t", SESSION, "M-q"]);
        if let Ok(code) = self.wait_exit(QUIT_GRACE) {
            return Ok(code);
        }
        self.signal(Signal::SIGTERM);
        if let Ok(code) = self.wait_exit(TERM_GRACE) {
            return Ok(code);
        }
        self.signal(Signal::SIGKILL);
        self.wait_exit(TERM_GRACE).map_err(|e| self.with_context(e))
    }

    /// SIGKILLs finch's PID (no sign-off, exit code 137) and waits for its exit file.
    pub fn kill9(&mut self) {
        self.signal(Signal::SIGKILL);
        let _ = self.wait_exit(TERM_GRACE);
    }

    /// Sends SIGKILL to finch and returns at once, without waiting for it to exit (for
    /// measurements that stamp the moment of the kill); call [`Finch::kill9`] afterwards to
    /// wait for the exit.
    pub fn send_kill9(&self) {
        self.signal(Signal::SIGKILL);
    }

    /// Quits finch if it runs, then launches it again with a fresh copy of its config dir (so
    /// it starts with the template's status, P10) in a new tmux server.
    pub fn restart(&mut self) -> Result<()> {
        self.quit()?;
        self.kill_tmux_server();
        self.pid = Some(self.launch()?);
        Ok(())
    }

    /// finch's PID (a child of the tmux pane's shell).
    pub fn pid(&self) -> u32 {
        self.pid.map_or(0, |p| p.pid)
    }

    /// The tmux server's PID, while it runs.
    pub fn tmux_server_pid(&self) -> Option<u32> {
        self.tmux_server.map(|p| p.pid)
    }

    /// finch's exit code, once it has exited (0 after Alt-q, 1 after SIGTERM, 137 after
    /// SIGKILL).
    pub fn exit_code(&self) -> Option<i32> {
        let text = read_log(&self.exit_file);
        if text.ends_with('\n') {
            text.trim().parse().ok()
        } else {
            None
        }
    }

    /// The visible screen (`tmux capture-pane -p`), or why it could not be captured.
    pub fn screen(&self) -> String {
        match self.tmux(&["capture-pane", "-p", "-t", SESSION]) {
            Ok(text) => text,
            Err(e) => format!("(no screen: {e})"),
        }
    }

    /// finch's stderr: with `-d`, every debug line and stanza.
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// The config dir finch runs with (`-c`).
    pub fn config_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The temp dir holding the template, config dir, log, exit file and tmux socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Copies the template and starts finch in a new tmux session; returns finch's PID.
    fn launch(&mut self) -> Result<ProcId> {
        if self.run_dir.exists() {
            std::fs::remove_dir_all(&self.run_dir)
                .map_err(|e| Error::io(format!("removing {}", self.run_dir.display()), e))?;
        }
        copy_dir(&self.template, &self.run_dir)?;
        match std::fs::remove_file(&self.exit_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(
                    format!("removing {}", self.exit_file.display()),
                    e,
                ));
            }
            _ => {}
        }
        let command = format!(
            "{} -d -c {} 2>>{}; echo $? > {}",
            sh_quote(&self.finch.to_string_lossy()),
            sh_quote(&self.run_dir.to_string_lossy()),
            sh_quote(&self.log.to_string_lossy()),
            sh_quote(&self.exit_file.to_string_lossy()),
        );
        let env = format!("DBUS_SESSION_BUS_ADDRESS={}", self.bus_address);
        self.tmux(&[
            "new-session",
            "-d",
            "-s",
            SESSION,
            "-x",
            "200",
            "-y",
            "50",
            "-e",
            &env,
            &command,
        ])?;
        let panes = self.tmux(&["list-panes", "-t", SESSION, "-F", "#{pane_pid} #{pid}"]);
        let panes = match panes {
            Ok(panes) => panes,
            Err(e) => return Err(self.check_running().err().unwrap_or(e)),
        };
        let mut numbers = panes.split_whitespace().map(str::parse::<u32>);
        let (Some(Ok(pane)), Some(Ok(server))) = (numbers.next(), numbers.next()) else {
            return Err(Error::Command {
                what: "tmux list-panes".into(),
                status: "unexpected output".into(),
                output: panes,
            });
        };
        self.tmux_server = ProcId::capture(server);
        try_wait_until("finch to start in the tmux pane", START_DEADLINE, || {
            self.check_running()?;
            Ok(children_named(pane, "finch")
                .first()
                .copied()
                .and_then(ProcId::capture))
        })
        .map_err(|e| self.with_context(e))
    }

    /// Signals finch if it (the very process we started) still runs.
    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid {
            pid.signal(signal);
        }
    }

    /// An error if finch has exited.
    fn check_running(&self) -> Result<()> {
        match self.exit_code() {
            Some(code) => Err(Error::Exited {
                what: "finch".into(),
                status: format!("exit code {code}"),
                context: String::new(),
            }),
            None => Ok(()),
        }
    }

    /// Waits for finch's exit file; returns the code.
    fn wait_exit(&self, d: Duration) -> Result<i32> {
        try_wait_until("finch to exit", d, || Ok(self.exit_code()))
    }

    /// Whether every account is connected, and a description of the state.
    fn connected_state(&self) -> Result<(bool, String)> {
        let active = self.purple_ints("PurpleAccountsGetAllActive", &[])?;
        let mut state = format!("active accounts {active:?}, IsConnected");
        let mut all = active.len() >= self.account_count;
        for account in active {
            let connected =
                self.purple_int("PurpleAccountIsConnected", &[DbusArg::Int(account)])?;
            let _ = write!(state, " {connected}");
            all &= connected == 1;
        }
        Ok((all, state))
    }

    /// Adds finch's log and screen (blank lines dropped, so dialogs at the top survive the
    /// tail) to a timeout or exit error.
    fn with_context(&self, e: Error) -> Error {
        let screen: Vec<String> = self
            .screen()
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        e.with_log("finch.log", &self.log())
            .with_log("finch's screen", &screen.join("\n"))
    }

    /// Runs tmux on our socket; returns its stdout.
    fn tmux(&self, args: &[&str]) -> Result<String> {
        let output = run(
            Command::new(&self.tmux)
                .arg("-S")
                .arg(&self.socket)
                .args(["-f", "/dev/null"])
                .args(args)
                .env_remove("TMUX")
                .env_remove("DBUS_SESSION_BUS_ADDRESS")
                .env("SHELL", "/bin/sh"),
            &format!("tmux {}", args.first().copied().unwrap_or_default()),
        )?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `kill-server` on our socket, then SIGKILL the server's PID if it is still there.
    fn kill_tmux_server(&mut self) {
        // "no server running" is fine.
        let _ = self.tmux(&["kill-server"]);
        if let Some(server) = self.tmux_server.take() {
            if !server.wait_gone(TMUX_GRACE) {
                server.signal(Signal::SIGKILL);
                server.wait_gone(TERM_GRACE);
            }
        }
    }
}

impl Drop for Finch {
    fn drop(&mut self) {
        if self.pid.is_some() && self.exit_code().is_none() {
            let _ = self.quit();
        }
        self.kill_tmux_server();
    }
}

/// The `int32` values in a `dbus-send --print-reply` body.
fn parse_ints(reply: &str) -> Vec<i32> {
    reply
        .lines()
        .filter_map(|line| line.strip_prefix("int32 ")?.trim().parse().ok())
        .collect()
}

/// A single-quoted shell word.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Creates `dir` with mode 0700.
fn make_private_dir(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))
}

/// Copies a directory tree (like `cp -a` for our plain files and dirs).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    make_private_dir(to)?;
    let entries =
        std::fs::read_dir(from).map_err(|e| Error::io(format!("reading {}", from.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("reading {}", from.display()), e))?;
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .map_err(|e| Error::io(format!("copying to {}", target.display()), e))?;
        }
    }
    Ok(())
}

/// Writes the template config dir: `accounts.xml`, `prefs.xml` (P11) and, for TLS, the
/// server certificate under `certificates/x509/tls_peers/127.0.0.1` (P8).
fn write_template(dir: &Path, accounts: &[FinchAccount]) -> Result<()> {
    make_private_dir(dir)?;
    let write = |name: &Path, text: &str| {
        std::fs::write(name, text).map_err(|e| Error::io(format!("writing {}", name.display()), e))
    };
    let mut xml =
        String::from("<?xml version='1.0' encoding='UTF-8' ?>\n<account version='1.0'>\n");
    let mut cert: Option<&Path> = None;
    for account in accounts {
        let (security, plain) = match &account.tls_cert {
            None => ("opportunistic_tls", true),
            Some(pem) => {
                if cert.is_some_and(|c| c != pem) {
                    return Err(Error::io(
                        "writing finch's accounts",
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidInput,
                            "all TLS accounts of one finch must share one certificate (P8)",
                        ),
                    ));
                }
                cert = Some(pem);
                ("require_tls", false)
            }
        };
        let _ = write!(
            xml,
            "<account>\n <protocol>prpl-jabber</protocol>\n <name>{}</name>\n \
             <password>{}</password>\n <settings>\n  \
             <setting name='connect_server' type='string'>127.0.0.1</setting>\n  \
             <setting name='port' type='int'>{}</setting>\n  \
             <setting name='connection_security' type='string'>{security}</setting>\n",
            escape(&account.jid_with_resource),
            escape(&account.password),
            account.port,
        );
        if plain {
            xml.push_str("  <setting name='auth_plain_in_clear' type='bool'>1</setting>\n");
        }
        xml.push_str(
            " </settings>\n <settings ui='gnt-purple'>\
             <setting name='auto-login' type='bool'>1</setting></settings>\n</account>\n",
        );
    }
    xml.push_str("</account>\n");
    write(&dir.join("accounts.xml"), &xml)?;
    write(&dir.join("prefs.xml"), PREFS)?;
    if let Some(pem) = cert {
        let peers = dir.join("certificates/x509/tls_peers");
        make_private_dir(&peers)?;
        let target = peers.join("127.0.0.1");
        std::fs::copy(pem, &target).map_err(|e| {
            Error::io(
                format!("copying {} to {}", pem.display(), target.display()),
                e,
            )
        })?;
    }
    Ok(())
}

/// No idle-away, no auto-reply, no logs, no sound (P11).
const PREFS: &str = "<?xml version='1.0' encoding='UTF-8' ?>
<pref version='1' name='/'>
\t<pref name='purple'>
\t\t<pref name='away'>
\t\t\t<pref name='idle_reporting' type='string' value='none'/>
\t\t\t<pref name='away_when_idle' type='bool' value='0'/>
\t\t\t<pref name='auto_reply' type='string' value='never'/>
\t\t</pref>
\t\t<pref name='logging'>
\t\t\t<pref name='log_ims' type='bool' value='0'/>
\t\t\t<pref name='log_chats' type='bool' value='0'/>
\t\t\t<pref name='log_system' type='bool' value='0'/>
\t\t</pref>
\t</pref>
\t<pref name='finch'>
\t\t<pref name='sound'>
\t\t\t<pref name='actprofile' type='string' value='default'/>
\t\t\t<pref name='mute' type='bool' value='1'/>
\t\t\t<pref name='profiles'>
\t\t\t\t<pref name='default'>
\t\t\t\t\t<pref name='method' type='string' value='nosound'/>
\t\t\t\t</pref>
\t\t\t</pref>
\t\t</pref>
\t</pref>
</pref>
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_are_read_from_scalars_and_arrays() {
        assert_eq!(parse_ints("int32 86"), vec![86]);
        assert_eq!(parse_ints("array [\nint32 86\nint32 90\n]"), vec![86, 90]);
        assert_eq!(parse_ints("array [\n]"), Vec::<i32>::new());
        assert_eq!(parse_ints("string \"x\""), Vec::<i32>::new());
    }

    #[test]
    fn dbus_send_arguments_are_typed() {
        assert_eq!(DbusArg::Int(-3).to_dbus_send(), "int32:-3");
        assert_eq!(DbusArg::from("a:b").to_dbus_send(), "string:a:b");
    }

    #[test]
    fn shell_quoting_survives_single_quotes() {
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn the_template_has_plaintext_settings_and_no_certificate() {
        let dir = tempfile::tempdir().expect("temp dir");
        let t = dir.path().join("t");
        let account = FinchAccount {
            jid_with_resource: "alice@example.test/finch".into(),
            password: "a<b".into(),
            port: 15222,
            tls_cert: None,
        };
        write_template(&t, &[account]).expect("template");
        let xml = std::fs::read_to_string(t.join("accounts.xml")).expect("accounts.xml");
        assert!(xml.contains("<password>a&lt;b</password>"), "{xml}");
        assert!(xml.contains(">opportunistic_tls<"), "{xml}");
        assert!(xml.contains("auth_plain_in_clear"), "{xml}");
        assert!(
            xml.contains("<setting name='port' type='int'>15222</setting>"),
            "{xml}"
        );
        assert!(!t.join("certificates").exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&t).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
