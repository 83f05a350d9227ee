//! A private Prosody on loopback (recipe §1).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{find_program, kill_child, log_since, read_log, run, stop_child};
use crate::{free_port, try_wait_until, Error, FinchAccount, Result, XmppClient};

/// The XMPP domain every testkit Prosody serves.
const DOMAIN: &str = "example.test";
/// How long Prosody may take to open its port.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long Prosody gets after SIGTERM before SIGKILL (recipe §1).
const TERM_GRACE: Duration = Duration::from_secs(15);
/// How often [`Prosody::start`] picks a new port when another process took the chosen one.
const PORT_ATTEMPTS: usize = 5;

/// What [`Prosody::start`] sets up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProsodyOptions {
    /// Require STARTTLS with a self-signed certificate for `example.test` (see
    /// [`Prosody::ca_cert`]); plaintext with PLAIN auth otherwise.
    pub tls: bool,
    /// Accounts as (local part, password), registered before the first start.
    pub users: Vec<(String, String)>,
    /// Pairs of local parts written into each other's roster with subscription `both`.
    pub both: Vec<(String, String)>,
    /// Module names added to `modules_enabled` (`"privacy_lists"`, not `"mod_privacy_lists"`).
    /// Each is looked up in Prosody's own module directory and where Debian's
    /// `prosody-modules` installs community modules; the directories where they are found
    /// go into `plugin_paths`. A module found nowhere is an [`Error::MissingModule`].
    pub extra_modules: Vec<String>,
}

impl Default for ProsodyOptions {
    /// Plaintext; alice/alicepw, bob/bobpw, watcher/watcherpw; alice 'both' with watcher and bob.
    fn default() -> Self {
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        ProsodyOptions {
            tls: false,
            users: vec![
                pair("alice", "alicepw"),
                pair("bob", "bobpw"),
                pair("watcher", "watcherpw"),
            ],
            both: vec![pair("alice", "watcher"), pair("alice", "bob")],
            extra_modules: Vec::new(),
        }
    }
}

impl ProsodyOptions {
    /// The default accounts and rosters, with STARTTLS required.
    pub fn tls() -> Self {
        ProsodyOptions {
            tls: true,
            ..ProsodyOptions::default()
        }
    }

    /// Adds `mod_privacy_lists` (XEP-0016, from Debian's `prosody-modules`).
    #[must_use]
    pub fn with_privacy_lists(mut self) -> Self {
        self.extra_modules.push(PRIVACY_LISTS.to_owned());
        self
    }
}

/// The community module that gives Prosody 0.12 XEP-0016 privacy lists.
const PRIVACY_LISTS: &str = "privacy_lists";

/// Where Prosody's own modules and community modules live: Debian 12's `prosody-modules`
/// installs them as `/usr/lib/prosody/modules/mod_*/mod_*.lua`; other packagings use
/// `/usr/share/prosody-modules` or `/usr/local/lib/prosody/modules`.
const MODULE_DIRS: [&str; 3] = [
    "/usr/lib/prosody/modules",
    "/usr/share/prosody-modules",
    "/usr/local/lib/prosody/modules",
];

/// The directory holding `mod_<name>.lua` or `mod_<name>/mod_<name>.lua` (Prosody accepts
/// both layouts), among `dirs`.
fn module_dir(name: &str, dirs: &[&str]) -> Option<PathBuf> {
    dirs.iter().map(PathBuf::from).find(|dir| {
        dir.join(format!("mod_{name}.lua")).is_file()
            || dir.join(format!("mod_{name}/mod_{name}.lua")).is_file()
    })
}

/// The `plugin_paths` for `modules`: every directory one of them was found in, once.
fn plugin_paths(modules: &[String]) -> Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for name in modules {
        let dir = module_dir(name, &MODULE_DIRS).ok_or_else(|| Error::MissingModule {
            module: format!("mod_{name}"),
            searched: MODULE_DIRS.join(", "),
            hint: "apt-get install -y prosody-modules".to_owned(),
        })?;
        if !paths.contains(&dir) {
            paths.push(dir);
        }
    }
    Ok(paths)
}

/// A running (or stopped) private Prosody serving `example.test` on one loopback port.
///
/// Only c2s listens, on 127.0.0.1; s2s is disabled and the http ports are free loopback ports
/// that only a module in [`ProsodyOptions::extra_modules`] could open. Dropping it stops the
/// server (SIGTERM, SIGKILL after 15 s) and deletes its directory.
#[derive(Debug)]
pub struct Prosody {
    program: PathBuf,
    config: PathBuf,
    log: PathBuf,
    stdout: PathBuf,
    port: u16,
    ca_cert: Option<PathBuf>,
    child: Option<Child>,
    tls: bool,
    extra_modules: Vec<String>,
    plugin_paths: Vec<PathBuf>,
    // Last, so that it is deleted after the server is stopped.
    dir: TempDir,
}

impl Prosody {
    /// Writes the config, registers the users, writes the rosters and starts Prosody, returning
    /// once the c2s port accepts connections.
    pub fn start(opts: ProsodyOptions) -> Result<Prosody> {
        let program = find_program("prosody", "prosody")?;
        let prosodyctl = find_program("prosodyctl", "prosody")?;
        let plugin_paths = plugin_paths(&opts.extra_modules)?;
        let dir = tempfile::Builder::new()
            .prefix("imstatus-prosody-")
            .tempdir()
            .map_err(|e| Error::io("creating Prosody's temp dir", e))?;
        let root = dir.path().join("prosody");
        let data = root.join("data");
        let certs = root.join("certs");
        for d in [&data, &certs] {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
        }
        let mut prosody = Prosody {
            program,
            config: root.join("prosody.cfg.lua"),
            log: dir.path().join("prosody.log"),
            stdout: dir.path().join("prosody.stdout"),
            port: free_port(),
            ca_cert: None,
            child: None,
            tls: opts.tls,
            extra_modules: opts.extra_modules.clone(),
            plugin_paths,
            dir,
        };
        if opts.tls {
            prosody.ca_cert = Some(make_certificate(&certs)?);
        }
        prosody.write_config()?;
        register_users(&prosodyctl, &prosody.config, &opts.users)?;
        write_rosters(&data, &opts.both)?;

        let mut attempt = 1;
        loop {
            match prosody.launch() {
                Err(Error::Command { what, .. })
                    if what == PORT_TAKEN && attempt < PORT_ATTEMPTS =>
                {
                    attempt += 1;
                    prosody.port = free_port();
                    prosody.write_config()?;
                }
                other => return other.map(|()| prosody),
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

    /// The temp dir holding config, data, certificates and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file (pass it to `prosodyctl --config`).
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// In TLS mode, the server's self-signed PEM certificate (`CA:FALSE`, SAN
    /// `DNS:example.test`, P18) for clients to trust as their only root.
    pub fn ca_cert(&self) -> Option<&Path> {
        self.ca_cert.as_deref()
    }

    /// A finch account `local@example.test/finch` for this server, trusting its certificate in
    /// TLS mode.
    pub fn finch_account(&self, local: &str, password: &str) -> FinchAccount {
        FinchAccount {
            jid_with_resource: format!("{local}@{DOMAIN}/finch"),
            password: password.to_owned(),
            port: self.port,
            tls_cert: self.ca_cert.clone(),
        }
    }

    /// The server's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Prosody's log file (info level and up), and whatever it printed to stdout/stderr.
    pub fn log(&self) -> String {
        let mut log = read_log(&self.log);
        let stdout = read_log(&self.stdout);
        if !stdout.trim().is_empty() {
            let _ = write!(log, "--- stdout/stderr ---\n{stdout}");
        }
        log
    }

    /// Stops the server: SIGTERM, SIGKILL after 15 s, and reaps it. Does nothing if it is not
    /// running. Takes ~10 ms idle and ~1 s with clients connected (Prosody waits for their
    /// streams); clients usually get `<system-shutdown/>`, but one that logged in moments
    /// before may just see EOF or a reset.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, "prosody", TERM_GRACE)?;
        }
        Ok(())
    }

    /// Waits until the server answers a stream header: its event loop has turned, so its
    /// signal handlers are set and [`Prosody::stop`] is a clean shutdown. [`Prosody::start`]
    /// only waits for the port (a stop right after it may kill Prosody outright).
    pub fn wait_serving(&self) -> Result<()> {
        try_wait_until("Prosody to answer a stream header", START_DEADLINE, || {
            Ok(answers_stream(self.port).then_some(()))
        })
    }

    /// SIGKILLs the server and reaps it. Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill_child(&mut child, "prosody");
        }
    }

    /// Stops the server and starts it again on the same port with the same data.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.launch()
    }

    fn write_config(&self) -> Result<()> {
        let t = self.dir.path();
        let root = t.join("prosody");
        let mut modules = vec!["roster", "saslauth", "disco", "ping"];
        if self.tls {
            modules.push("tls");
        }
        modules.extend(self.extra_modules.iter().map(String::as_str));
        let modules: String = modules
            .iter()
            .map(|m| format!("{}; ", lua_str(m)))
            .collect();
        let (auth, require, plain) = if self.tls {
            ("internal_hashed", "true", "false")
        } else {
            ("internal_plain", "false", "true")
        };
        let ssl = match &self.ca_cert {
            Some(crt) => format!(
                "\tssl = {{ key = {}; certificate = {}; }}\n",
                lua_str(&crt.with_extension("key").to_string_lossy()),
                lua_str(&crt.to_string_lossy())
            ),
            None => String::new(),
        };
        let path = |p: &Path| lua_str(&p.to_string_lossy());
        let plugin_paths = if self.plugin_paths.is_empty() {
            String::new()
        } else {
            let list: String = self
                .plugin_paths
                .iter()
                .map(|p| format!("{}; ", path(p)))
                .collect();
            format!("plugin_paths = {{ {list}}}\n")
        };
        let config = format!(
            "-- written by imstatus-testkit (docs/e2e-recipe.md §1)\n\
             run_as_root = true\n\
             data_path = {data}; pidfile = {pidfile}\n\
             certificates = \"certs\"\n\
             {plugin_paths}\
             log = {{ {{ levels = {{ min = \"info\" }}, to = \"file\", filename = {log} }} }}\n\
             interfaces = {{ \"127.0.0.1\" }}; local_interfaces = {{ \"127.0.0.1\" }}\n\
             c2s_interfaces = {{ \"127.0.0.1\" }}; s2s_interfaces = {{ \"127.0.0.1\" }}\n\
             http_interfaces = {{ \"127.0.0.1\" }}; https_interfaces = {{ \"127.0.0.1\" }}\n\
             c2s_ports = {{ {c2s} }}; s2s_ports = {{ {s2s} }}; http_ports = {{ {http} }}; https_ports = {{ {https} }}\n\
             c2s_direct_tls_ports = {{ }}; s2s_direct_tls_ports = {{ }}\n\
             modules_disabled = {{ \"s2s\"; \"s2s_auth_certs\"; \"offline\"; }}\n\
             limits = {{ }}\n\
             modules_enabled = {{ {modules}}}\n\
             authentication = \"{auth}\"\n\
             c2s_require_encryption = {require}\n\
             allow_unencrypted_plain_auth = {plain}\n\
             VirtualHost \"{DOMAIN}\"\n{ssl}",
            data = path(&root.join("data")),
            pidfile = path(&root.join("prosody.pid")),
            log = path(&self.log),
            c2s = self.port,
            s2s = free_port(),
            http = free_port(),
            https = free_port(),
        );
        std::fs::write(&self.config, config)
            .map_err(|e| Error::io(format!("writing {}", self.config.display()), e))
    }

    /// Spawns `prosody --config F -F` and waits for its c2s port.
    fn launch(&mut self) -> Result<()> {
        let log_start = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let stdout = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stdout)
            .map_err(|e| Error::io(format!("opening {}", self.stdout.display()), e))?;
        let stderr = stdout
            .try_clone()
            .map_err(|e| Error::io("duplicating Prosody's stdout", e))?;
        let child = Command::new(&self.program)
            .arg("--config")
            .arg(&self.config)
            .arg("-F")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|e| Error::io("spawning prosody", e))?;
        let child = self.child.insert(child);

        let port = self.port;
        let ready = format!("Activated service 'c2s' on [127.0.0.1]:{port}");
        let taken = format!("Failed to open server port {port}");
        let log = &self.log;
        let waited = try_wait_until(
            &format!("Prosody to listen on 127.0.0.1:{port}"),
            START_DEADLINE,
            || {
                if let Some(status) = child
                    .try_wait()
                    .map_err(|e| Error::io("reaping prosody", e))?
                {
                    return Err(Error::Exited {
                        what: "prosody".into(),
                        status: status.to_string(),
                        context: String::new(),
                    });
                }
                let new = log_since(log, log_start);
                if new.contains(&taken) {
                    return Err(Error::Command {
                        what: PORT_TAKEN.into(),
                        status: format!("port {port} in use"),
                        output: new,
                    });
                }
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                Ok((new.contains(&ready)
                    && TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok())
                .then_some(()))
            },
        );
        if let Err(e) = waited {
            self.kill();
            return Err(e.with_log("prosody.log", &self.log()));
        }
        Ok(())
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        if self.stop().is_err() {
            self.kill();
        }
    }
}

/// Whether the server on `port` answers a stream header with its features. The kernel accepts
/// a connection as soon as the port listens, but Prosody sets its signal handlers (mod_posix)
/// in a timer that fires on its event loop's first turn: a SIGTERM before that kills it
/// without a clean shutdown. An answer means the loop has turned (see
/// [`Prosody::wait_serving`]).
fn answers_stream(port: u16) -> bool {
    XmppClient::stream_features(port, DOMAIN, Duration::from_secs(1)).is_ok()
}

/// The `what` of the internal error that makes [`Prosody::start`] pick another port.
const PORT_TAKEN: &str = "prosody: c2s port taken by another process";

/// A Lua string literal.
fn lua_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Prosody's file-name encoding (`util.datamanager`): every byte that is not an ASCII letter
/// or digit becomes `%xx`.
fn dm_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

/// Creates `example.test.crt`/`.key` in `certs` (P18: `CA:FALSE`), returning the certificate.
fn make_certificate(certs: &Path) -> Result<PathBuf> {
    let openssl = find_program("openssl", "openssl")?;
    let crt = certs.join(format!("{DOMAIN}.crt"));
    let key = certs.join(format!("{DOMAIN}.key"));
    run(
        Command::new(openssl)
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
            ])
            .args(["-subj", &format!("/CN={DOMAIN}")])
            .args(["-addext", &format!("subjectAltName=DNS:{DOMAIN}")])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt),
        "openssl req (Prosody certificate)",
    )?;
    Ok(crt)
}

/// `prosodyctl register` for every user, all at once (each takes ~65 ms).
fn register_users(prosodyctl: &Path, config: &Path, users: &[(String, String)]) -> Result<()> {
    let mut running = Vec::new();
    for (user, password) in users {
        let child = Command::new(prosodyctl)
            .arg("--config")
            .arg(config)
            .args(["register", user, DOMAIN, password])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io("spawning prosodyctl", e))?;
        running.push((user, child));
    }
    let mut first_error = None;
    for (user, child) in running {
        let what = format!("prosodyctl register {user} {DOMAIN}");
        let result = child
            .wait_with_output()
            .map_err(|e| Error::io(format!("waiting for {what}"), e));
        let err = match result {
            Ok(out) if out.status.success() => continue,
            Ok(out) => Error::Command {
                what,
                status: out.status.to_string(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stderr),
                    String::from_utf8_lossy(&out.stdout)
                ),
            },
            Err(e) => e,
        };
        first_error.get_or_insert(err);
    }
    first_error.map_or(Ok(()), Err)
}

/// Writes `roster/<user>.dat` files with subscription `both` for every pair (P4: Prosody must
/// be stopped).
fn write_rosters(data: &Path, both: &[(String, String)]) -> Result<()> {
    let mut rosters: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in both {
        rosters.entry(a).or_default().push(b);
        rosters.entry(b).or_default().push(a);
    }
    let dir = data.join(dm_encode(DOMAIN)).join("roster");
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    for (user, contacts) in rosters {
        let mut text =
            String::from("return {\n\t[false] = { [\"version\"] = 1; [\"pending\"] = {}; };\n");
        for contact in contacts {
            let _ = writeln!(
                text,
                "\t[{}] = {{ [\"subscription\"] = \"both\"; [\"groups\"] = {{}}; }};",
                lua_str(&format!("{contact}@{DOMAIN}"))
            );
        }
        text.push_str("};\n");
        let file = dir.join(format!("{}.dat", dm_encode(user)));
        std::fs::write(&file, text)
            .map_err(|e| Error::io(format!("writing {}", file.display()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datamanager_encoding_matches_prosody() {
        assert_eq!(dm_encode("example.test"), "example%2etest");
        assert_eq!(dm_encode("a_b-c"), "a%5fb%2dc");
        assert_eq!(dm_encode("alice"), "alice");
    }

    #[test]
    fn modules_are_found_in_either_layout_and_missing_ones_name_the_package() {
        let dir = tempfile::tempdir().expect("temp dir");
        let flat = dir.path().join("flat");
        let nested = dir.path().join("nested/mod_b");
        std::fs::create_dir_all(&flat).expect("mkdir");
        std::fs::create_dir_all(&nested).expect("mkdir");
        std::fs::write(flat.join("mod_a.lua"), "").expect("write");
        std::fs::write(nested.join("mod_b.lua"), "").expect("write");
        let flat_s = flat.to_string_lossy().into_owned();
        let nested_s = dir.path().join("nested").to_string_lossy().into_owned();
        let dirs = [flat_s.as_str(), nested_s.as_str()];
        assert_eq!(module_dir("a", &dirs), Some(flat.clone()));
        assert_eq!(module_dir("b", &dirs), Some(dir.path().join("nested")));
        assert_eq!(module_dir("c", &dirs), None);
        let err = plugin_paths(&["no_such_module_at_all".to_owned()])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("mod_no_such_module_at_all"), "{err}");
        assert!(err.contains("apt-get install -y prosody-modules"), "{err}");
    }

    #[test]
    fn lua_strings_are_escaped() {
        assert_eq!(lua_str(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn rosters_are_written_both_ways() {
        let dir = tempfile::tempdir().expect("temp dir");
        let both = ProsodyOptions::default().both;
        write_rosters(dir.path(), &both).expect("rosters");
        let roster = dir.path().join("example%2etest/roster");
        let alice = std::fs::read_to_string(roster.join("alice.dat")).expect("alice.dat");
        let watcher = std::fs::read_to_string(roster.join("watcher.dat")).expect("watcher.dat");
        assert!(alice.contains("[\"watcher@example.test\"] = { [\"subscription\"] = \"both\";"));
        assert!(alice.contains("[\"bob@example.test\"]"));
        assert!(watcher.contains("[\"alice@example.test\"]"));
        assert!(!watcher.contains("bob"));
        assert!(alice.starts_with("return {\n\t[false] = { [\"version\"] = 1;"));
    }
}
