//! The `imstatus` command line: what the user typed (clap structs) is kept apart from what
//! runs (a [`Hub`] built from the resolved config), so every command is testable in-process
//! with a scripted source and, end to end, as the real binary.
//!
//! Exit codes are part of the interface: `status` exits 0 signed in, 3 running but signed
//! out, 4 client not running, 1 on an error, 2 on a usage or config error; `wait` exits 124
//! on timeout. A closed stdout (`imstatus watch --json | head -1`) ends `watch` with 0.
//!
//! The same code builds for Windows (`x86_64-pc-windows-gnu`): the platform-specific parts are
//! [`stop_signal`] (SIGTERM vs. the console's close/shutdown events), the closed-stdout check,
//! and `watch --exec` ([`hook`]: process group vs. process tree).

use std::collections::HashSet;
use std::future::Future;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use imstatus_core::{
    AccountId, Availability, Client, CodedError, ErrorCode, Event, EventKind, Session,
    SignInResult, Snapshot, Status,
};
use imstatus_hub::config::{AccountConfig, Config};
use imstatus_hub::{Hub, Source};

pub mod format;
pub mod hook;
pub mod source;

/// Exit: signed in / reached / ok.
pub const EXIT_OK: u8 = 0;
/// Exit: an error (the code and hint are printed).
pub const EXIT_ERROR: u8 = 1;
/// Exit: bad usage or config.
pub const EXIT_USAGE: u8 = 2;
/// Exit: the client runs but the user is signed out.
pub const EXIT_SIGNED_OUT: u8 = 3;
/// Exit: the client is not running.
pub const EXIT_NOT_RUNNING: u8 = 4;
/// Exit: `wait` timed out.
pub const EXIT_TIMEOUT: u8 = 124;

/// How long one-shot commands wait for sources to report, by default.
const SETTLE: Duration = Duration::from_secs(10);

/// Is the user's IM client running, are they signed in, and what is their status?
#[derive(Debug, Parser)]
#[command(name = "imstatus", version, about, long_about = None)]
pub struct Cli {
    /// Config file (default: $IMSTATUS_CONFIG, then $XDG_CONFIG_HOME/imstatus/config.toml,
    /// on Windows %APPDATA%\imstatus\config.toml; with none, the local IM client: libpurple
    /// on the session bus, on Windows the `IM Providers` default client).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// One snapshot per account. Exit 0 signed in, 3 signed out, 4 client not running, 1 error.
    Status {
        /// Only this account.
        account: Option<String>,
        /// JSON Lines, one snapshot object per account.
        #[arg(long)]
        json: bool,
        /// How long to wait for the sources to report.
        #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// A snapshot, then live events until Ctrl-C.
    Watch {
        /// Only these accounts.
        accounts: Vec<String>,
        /// JSON Lines (the schema is in docs/events.md).
        #[arg(long)]
        json: bool,
        /// Also show contacts' status changes.
        #[arg(long)]
        contacts: bool,
        /// Run this shell command once per event, in order, with the event in IMSTATUS_*
        /// environment variables (see docs/hooks.md).
        #[arg(long, value_name = "CMD")]
        exec: Option<String>,
        /// Time limit of one --exec run; the hook's process group (on Windows: process tree)
        /// is killed after it.
        #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
        exec_timeout: Duration,
    },
    /// Block until a state is reached: signed-in, signed-out, running, not-running,
    /// status=AVAILABILITY. Exit 0 when reached, 124 on timeout.
    Wait {
        /// The state to wait for.
        #[arg(value_parser = parse_target)]
        state: Target,
        /// Give up after this long (e.g. 30s, 5m). Default: wait forever.
        #[arg(long, value_name = "DUR", value_parser = parse_duration)]
        timeout: Option<Duration>,
        /// Only this account (default: every account must reach the state).
        #[arg(long)]
        account: Option<String>,
    },
    /// Set the user's status where the source supports it.
    Set {
        /// available, chatty, away, extended_away, busy, invisible or offline.
        #[arg(value_parser = parse_availability)]
        availability: Availability,
        /// The status message.
        #[arg(long)]
        message: Option<String>,
        /// Only this account (default: every account).
        #[arg(long)]
        account: Option<String>,
    },
    /// Contacts and their presence.
    Contacts {
        /// Only this account.
        account: Option<String>,
        /// JSON Lines.
        #[arg(long)]
        json: bool,
    },
    /// Check every configured account step by step and say what to fix.
    Doctor,
    /// Serve the HTTP/SSE/WebSocket gateway and the dashboard (config: [serve]) until Ctrl-C
    /// or SIGTERM, then drain.
    #[cfg(feature = "gateway")]
    Serve,
    /// Print a shell completion script (bash, zsh, fish).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), generated from these definitions.
    Man,
}

/// A state `wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The user is signed in.
    SignedIn,
    /// The user is signed out (or the client is not running).
    SignedOut,
    /// The client runs.
    Running,
    /// The client does not run.
    NotRunning,
    /// Signed in with this availability.
    Availability(Availability),
}

impl Target {
    /// Does this snapshot satisfy the target?
    pub fn reached(self, s: &Snapshot) -> bool {
        match self {
            Target::SignedIn => s.session == Session::SignedIn,
            Target::SignedOut => s.session == Session::SignedOut || s.client == Client::NotRunning,
            Target::Running => s.client == Client::Running,
            Target::NotRunning => s.client == Client::NotRunning,
            Target::Availability(a) => s.session == Session::SignedIn && s.availability == a,
        }
    }
}

fn parse_target(s: &str) -> Result<Target, String> {
    Ok(match s {
        "signed-in" => Target::SignedIn,
        "signed-out" => Target::SignedOut,
        "running" => Target::Running,
        "not-running" => Target::NotRunning,
        other => match other.strip_prefix("status=") {
            Some(a) => Target::Availability(parse_availability(a)?),
            None => {
                return Err(format!(
                    "`{other}`: expected signed-in, signed-out, running, not-running or status=AVAILABILITY"
                ))
            }
        },
    })
}

fn parse_availability(s: &str) -> Result<Availability, String> {
    s.parse()
        .map_err(|e: imstatus_core::state::UnknownAvailability| e.to_string())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (try 1s, 500ms, 2m)"))
}

/// Logs to stderr, filtered by `RUST_LOG` (default: warnings).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
}

/// Resolves on Ctrl-C or SIGTERM, or when stdout's reader goes away.
///
/// On Windows: on Ctrl-C or Ctrl-Break, or when the console window is closed, the user logs
/// off or the system shuts down (`CTRL_CLOSE_EVENT` & co.; Windows ends the process a few
/// seconds after those, so the drain must be quick). A closed stdout is noticed by the next
/// write failing (`ERROR_NO_DATA`, a broken pipe, which `watch` treats as the end).
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
            () = stdout_closed() => {}
        }
    }
    #[cfg(windows)]
    {
        use tokio::signal::windows;
        // A listener that cannot be installed (no console, e.g. under a service manager) just
        // never fires.
        macro_rules! on {
            ($listener:expr) => {
                async {
                    match $listener {
                        Ok(mut s) => {
                            s.recv().await;
                        }
                        Err(_) => std::future::pending::<()>().await,
                    }
                }
            };
        }
        tokio::select! {
            () = on!(windows::ctrl_c()) => {}
            () = on!(windows::ctrl_break()) => {}
            () = on!(windows::ctrl_close()) => {}
            () = on!(windows::ctrl_logoff()) => {}
            () = on!(windows::ctrl_shutdown()) => {}
        }
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Resolves when stdout is a pipe whose reader has gone (POLLERR/POLLHUP), so that
/// `imstatus watch | head -1` ends even if no further event comes.
#[cfg(unix)]
async fn stdout_closed() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let stdout = io::stdout();
        loop {
            let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {
                    let revents = fds[0].revents().unwrap_or(PollFlags::empty());
                    if revents.intersects(PollFlags::POLLERR | PollFlags::POLLHUP) {
                        let _ = tx.send(());
                        return;
                    }
                    if revents.contains(PollFlags::POLLNVAL) {
                        return;
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    });
    if rx.await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Builds a source for a config entry.
pub type Factory = dyn Fn(&AccountConfig) -> anyhow::Result<Arc<dyn Source>> + Send + Sync;

/// Runs one command; returns the exit code. `stop` ends `watch` (Ctrl-C in the binary).
pub async fn run(
    cli: Cli,
    factory: &Factory,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
    stop: impl Future<Output = ()> + Send + 'static,
) -> u8 {
    // Commands that need no config.
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "imstatus", out);
            return EXIT_OK;
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            return match clap_mangen::Man::new(cmd).render(out) {
                Ok(()) => EXIT_OK,
                Err(e) if reader_gone(&e) => EXIT_OK,
                Err(e) => {
                    let _ = writeln!(err, "imstatus: {e}");
                    EXIT_ERROR
                }
            };
        }
        _ => {}
    }
    let config = match Config::discover(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "imstatus: config: {e}");
            return EXIT_USAGE;
        }
    };
    if config.accounts.is_empty() {
        let _ = writeln!(
            err,
            "imstatus: config: no [[account]] configured; add one (see docs/config.md)"
        );
        return EXIT_USAGE;
    }
    let result = match cli.command {
        Command::Status {
            account,
            json,
            timeout,
        } => {
            status(
                &config,
                factory,
                account.as_deref(),
                json,
                timeout,
                out,
                err,
            )
            .await
        }
        Command::Watch {
            accounts,
            json,
            contacts,
            exec,
            exec_timeout,
        } => {
            let hook = exec.map(|command| (command, exec_timeout));
            let view = WatchView {
                json,
                contacts,
                hook,
            };
            watch(&config, factory, &accounts, &view, out, err, stop).await
        }
        Command::Wait {
            state,
            timeout,
            account,
        } => wait(&config, factory, state, timeout, account.as_deref(), err).await,
        Command::Set {
            availability,
            message,
            account,
        } => {
            let status = match message {
                Some(m) => Status::with_message(availability, m),
                None => Status::new(availability),
            };
            set(&config, factory, status, account.as_deref(), out, err).await
        }
        Command::Contacts { account, json } => {
            contacts(&config, factory, account.as_deref(), json, out, err).await
        }
        Command::Doctor => doctor(&config, out).await,
        #[cfg(feature = "gateway")]
        Command::Serve => serve(&config, factory, err, stop).await,
        Command::Completions { .. } | Command::Man => Ok(EXIT_OK),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Usage(msg)) => {
            let _ = writeln!(err, "imstatus: {msg}");
            EXIT_USAGE
        }
        Err(Failure::Io(e)) if reader_gone(&e) => EXIT_OK,
        Err(Failure::Io(e)) => {
            let _ = writeln!(err, "imstatus: {e}");
            EXIT_ERROR
        }
        Err(Failure::Other(e)) => {
            let _ = writeln!(err, "imstatus: {e:#}");
            EXIT_ERROR
        }
    }
}

/// Did a write fail because stdout's reader has gone (`imstatus watch | head -1`)? A broken
/// pipe; on Windows also `ERROR_PIPE_NOT_CONNECTED` (233), which is what wine reports there
/// (Windows itself says `ERROR_NO_DATA`, 232, which Rust already calls a broken pipe).
fn reader_gone(e: &io::Error) -> bool {
    const ERROR_BROKEN_PIPE: i32 = 109;
    const ERROR_NO_DATA: i32 = 232;
    const ERROR_PIPE_NOT_CONNECTED: i32 = 233;
    e.kind() == io::ErrorKind::BrokenPipe
        || (cfg!(windows)
            && matches!(
                e.raw_os_error(),
                Some(ERROR_BROKEN_PIPE | ERROR_NO_DATA | ERROR_PIPE_NOT_CONNECTED)
            ))
}

/// Why a command stopped early.
#[derive(Debug)]
enum Failure {
    Usage(String),
    Io(io::Error),
    Other(anyhow::Error),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

/// Selects accounts by name; unknown names are a usage error.
fn select<'a>(config: &'a Config, names: &[&str]) -> Result<Vec<&'a AccountConfig>, Failure> {
    if names.is_empty() {
        return Ok(config.accounts.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            config.account(n).ok_or_else(|| {
                let known: Vec<_> = config.accounts.iter().map(|a| a.name.as_str()).collect();
                Failure::Usage(format!(
                    "no account `{n}` in the config (accounts: {})",
                    known.join(", ")
                ))
            })
        })
        .collect()
}

fn start_hub(accounts: &[&AccountConfig], factory: &Factory) -> Result<Hub, Failure> {
    let mut builder = Hub::builder();
    for a in accounts {
        builder = builder.with_source(a.name.clone(), factory(a).map_err(Failure::Other)?);
    }
    Ok(builder.start())
}

/// The answer for one account: its snapshot event and the error keeping its source down.
struct Answer {
    event: Event,
    error: Option<CodedError>,
}

impl Answer {
    fn exit_code(&self) -> u8 {
        let Some(s) = self.event.snapshot() else {
            return EXIT_ERROR;
        };
        match &self.error {
            Some(e) if e.code == ErrorCode::ClientNotRunning => return EXIT_NOT_RUNNING,
            Some(_) => return EXIT_ERROR,
            None => {}
        }
        match (s.client, s.session) {
            (Client::NotRunning, _) => EXIT_NOT_RUNNING,
            (_, Session::SignedIn) => EXIT_OK,
            (_, Session::Unknown) => EXIT_ERROR,
            _ => EXIT_SIGNED_OUT,
        }
    }
}

/// The least good of several exit codes: error, then not running, then signed out.
fn worst(codes: impl IntoIterator<Item = u8>) -> u8 {
    let rank = |c| match c {
        EXIT_ERROR => 3,
        EXIT_NOT_RUNNING => 2,
        EXIT_SIGNED_OUT => 1,
        _ => 0,
    };
    codes
        .into_iter()
        .max_by_key(|&c| rank(c))
        .unwrap_or(EXIT_OK)
}

async fn answers(
    config: &Config,
    factory: &Factory,
    account: Option<&str>,
    timeout: Duration,
) -> Result<(Hub, Vec<Answer>), Failure> {
    let selected = select(config, &account.into_iter().collect::<Vec<_>>())?;
    let hub = start_hub(&selected, factory)?;
    let ids = hub.accounts();
    let settled = hub.wait_settled(&ids, timeout).await;
    let answers = ids
        .iter()
        .filter_map(|id| {
            let event = hub.snapshot(id)?;
            let error = hub.source_error(id).or_else(|| {
                (!settled
                    && event
                        .snapshot()
                        .is_some_and(|s| s.session == Session::Unknown))
                .then(|| {
                    CodedError::new(
                        ErrorCode::Timeout,
                        format!(
                            "no answer from the source within {}",
                            humantime::format_duration(timeout)
                        ),
                    )
                })
            });
            Some(Answer { event, error })
        })
        .collect();
    Ok((hub, answers))
}

async fn status(
    config: &Config,
    factory: &Factory,
    account: Option<&str>,
    json: bool,
    timeout: Duration,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Result<u8, Failure> {
    let (_hub, answers) = answers(config, factory, account, timeout).await?;
    let rows: Vec<_> = answers
        .iter()
        .map(|a| (&a.event, a.error.as_ref()))
        .collect();
    if json {
        for (event, _) in &rows {
            writeln!(out, "{}", format::json(event))?;
        }
    } else {
        out.write_all(format::status_table(&rows).as_bytes())?;
    }
    for a in &answers {
        if let Some(e) = &a.error {
            writeln!(err, "imstatus: {}: {e}", a.event.account)?;
            writeln!(err, "  hint: {}", e.code.hint())?;
        }
    }
    out.flush()?;
    Ok(worst(answers.iter().map(Answer::exit_code)))
}

/// How `watch` shows events.
struct WatchView {
    json: bool,
    contacts: bool,
    /// `--exec` command and its time limit.
    hook: Option<(String, Duration)>,
}

async fn watch(
    config: &Config,
    factory: &Factory,
    accounts: &[String],
    view: &WatchView,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
    stop: impl Future<Output = ()>,
) -> Result<u8, Failure> {
    let names: Vec<&str> = accounts.iter().map(String::as_str).collect();
    let selected = select(config, &names)?;
    let hub = start_hub(&selected, factory)?;
    let ids = hub.accounts();
    // Start from a settled state so the first snapshot is the real answer, not "unknown".
    hub.wait_settled(&ids, SETTLE).await;
    let mut sub = hub.subscribe_to(Some(ids.iter().cloned().collect::<HashSet<AccountId>>()));
    // Warnings given while the sources started (e.g. "working visibly") came before the
    // subscription: show them once, on stderr, so that stdout keeps the documented stream.
    if !view.json {
        for id in &ids {
            for e in hub.recent_source_errors(id) {
                writeln!(err, "warning: {}", format::event_line(&e, false))?;
            }
        }
    }
    // Each account's state after every event, for the hook's environment.
    let mut states: std::collections::HashMap<AccountId, Snapshot> = Default::default();
    tokio::pin!(stop);
    let mut warned = HashSet::new();
    loop {
        let event = tokio::select! {
            () = &mut stop => break,
            e = sub.recv() => match e {
                Some(e) => e,
                None => break,
            },
        };
        let state = states
            .entry(event.account.clone())
            .or_insert_with(Snapshot::unknown);
        state.apply(&event.kind, event.time);
        if !view.contacts && matches!(event.kind, EventKind::ContactStatusChanged { .. }) {
            continue;
        }
        if view.json {
            writeln!(out, "{}", format::json(&event))?;
        } else {
            writeln!(out, "{}", format::event_line(&event, view.contacts))?;
            if let EventKind::SourceError { code, .. }
            | EventKind::SignedIn {
                result: SignInResult::Failed(code),
            } = &event.kind
            {
                if warned.insert((event.account.clone(), *code)) {
                    writeln!(err, "  hint: {}", code.hint())?;
                }
            }
        }
        out.flush()?;
        if let Some((command, timeout)) = &view.hook {
            let outcome = tokio::select! {
                () = &mut stop => break,
                o = hook::run(command, &event, state, *timeout) => o,
            };
            let what = format!(
                "event {} of {} (seq {})",
                event.kind.name(),
                event.account,
                event.seq
            );
            match outcome {
                hook::Outcome::Ok => {}
                hook::Outcome::Failed(Some(code)) => {
                    writeln!(err, "imstatus: --exec exited with {code} for {what}")?;
                }
                hook::Outcome::Failed(None) => {
                    writeln!(err, "imstatus: --exec was killed by a signal for {what}")?;
                }
                hook::Outcome::TimedOut => writeln!(
                    err,
                    "imstatus: --exec ran past {} for {what}; killed it",
                    humantime::format_duration(*timeout)
                )?,
                hook::Outcome::NotStarted(e) => {
                    writeln!(err, "imstatus: --exec could not start for {what}: {e}")?;
                }
            }
        }
    }
    Ok(EXIT_OK)
}

async fn wait(
    config: &Config,
    factory: &Factory,
    target: Target,
    timeout: Option<Duration>,
    account: Option<&str>,
    err: &mut (dyn Write + Send),
) -> Result<u8, Failure> {
    let selected = select(config, &account.into_iter().collect::<Vec<_>>())?;
    let hub = start_hub(&selected, factory)?;
    let mut sub = hub.subscribe();
    let mut states: std::collections::HashMap<AccountId, Snapshot> = Default::default();
    let ids = hub.accounts();
    let waiting = async {
        while let Some(event) = sub.recv().await {
            let state = states
                .entry(event.account.clone())
                .or_insert_with(Snapshot::unknown);
            state.apply(&event.kind, event.time);
            if ids
                .iter()
                .all(|id| states.get(id).is_some_and(|s| target.reached(s)))
            {
                return true;
            }
        }
        false
    };
    let reached = match timeout {
        Some(t) => tokio::time::timeout(t, waiting).await.unwrap_or(false),
        None => waiting.await,
    };
    if reached {
        Ok(EXIT_OK)
    } else {
        if let Some(t) = timeout {
            writeln!(
                err,
                "imstatus: timed out after {}",
                humantime::format_duration(t)
            )?;
        }
        Ok(EXIT_TIMEOUT)
    }
}

async fn set(
    config: &Config,
    factory: &Factory,
    status: Status,
    account: Option<&str>,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Result<u8, Failure> {
    let selected = select(config, &account.into_iter().collect::<Vec<_>>())?;
    let hub = start_hub(&selected, factory)?;
    let ids = hub.accounts();
    hub.wait_settled(&ids, SETTLE).await;
    let mut code = EXIT_OK;
    for id in &ids {
        match hub.set_status(id, status.clone()).await {
            Ok(()) => writeln!(out, "{id}: {}", format::status_text(&status))?,
            Err(e) => {
                writeln!(err, "imstatus: {id}: {e}")?;
                writeln!(err, "  hint: {}", e.code.hint())?;
                code = EXIT_ERROR;
            }
        }
    }
    Ok(code)
}

async fn contacts(
    config: &Config,
    factory: &Factory,
    account: Option<&str>,
    json: bool,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Result<u8, Failure> {
    let (_hub, answers) = answers(config, factory, account, SETTLE).await?;
    let mut code = EXIT_OK;
    for a in &answers {
        if let Some(e) = &a.error {
            writeln!(err, "imstatus: {}: {e}", a.event.account)?;
            code = EXIT_ERROR;
            continue;
        }
        let Some(s) = a.event.snapshot() else {
            continue;
        };
        for c in &s.contacts {
            if json {
                let line = serde_json::json!({
                    "account": a.event.account, "contact": c.contact,
                    "availability": c.availability, "message": c.message,
                });
                writeln!(out, "{line}")?;
            } else {
                writeln!(
                    out,
                    "{:<12} {:<32} {}",
                    a.event.account,
                    c.contact,
                    format::status_text(&c.status())
                )?;
            }
        }
    }
    Ok(code)
}

#[cfg(feature = "gateway")]
async fn serve(
    config: &Config,
    factory: &Factory,
    err: &mut (dyn Write + Send),
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<u8, Failure> {
    let serve = config.serve.clone().unwrap_or_default();
    // Refuse a public address without tokens before starting any source.
    if let Err(e) = imstatus_gateway::check_listen(serve.listen, !serve.tokens.is_empty()) {
        return Err(Failure::Usage(format!("serve: {e}")));
    }
    let all: Vec<&AccountConfig> = config.accounts.iter().collect();
    let hub = Arc::new(start_hub(&all, factory)?);
    writeln!(
        err,
        "imstatus: serving {} account(s) on http://{}/ ({})",
        all.len(),
        serve.listen,
        match (serve.tokens.is_empty(), serve.tokenless_write) {
            (true, false) => "loopback only, no tokens, read-only",
            (true, true) => "loopback only, no tokens, read-write: tokenless_write = true",
            (false, _) => "bearer tokens required",
        }
    )?;
    // MQTT runs beside HTTP on its own subscription: a broker that is down never holds up the
    // gateway. Both stop on the same signal; MQTT then publishes `offline`.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mqtt = match &config.mqtt {
        Some(cfg) => {
            let settings = mqtt_settings(cfg)?;
            writeln!(err, "imstatus: publishing to MQTT at {}", cfg.url)?;
            Some(tokio::spawn(imstatus_gateway::run_mqtt(
                hub.clone(),
                settings,
                stopped(stop_rx.clone()),
            )))
        }
        None => None,
    };
    tokio::spawn(async move {
        stop.await;
        let _ = stop_tx.send(true);
    });
    let served = imstatus_gateway::serve(hub, &serve, stopped(stop_rx)).await;
    if let Some(task) = mqtt {
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(Err(e))) => writeln!(err, "imstatus: mqtt: {e}")?,
            Ok(_) => {}
            Err(_) => writeln!(err, "imstatus: mqtt: did not stop within 5 s")?,
        }
    }
    match served {
        Ok(()) => Ok(EXIT_OK),
        Err(e @ imstatus_gateway::Error::Bind { .. }) => Err(Failure::Usage(format!("serve: {e}"))),
        Err(e) => Err(Failure::Other(e.into())),
    }
}

/// The MQTT client's settings from `[mqtt]`; any problem is a config error (exit 2).
#[cfg(feature = "gateway")]
fn mqtt_settings(
    cfg: &imstatus_hub::config::MqttConfig,
) -> Result<imstatus_gateway::MqttSettings, Failure> {
    let bad = |e: &dyn std::fmt::Display| Failure::Usage(format!("config: [mqtt]: {e}"));
    let mut s = imstatus_gateway::MqttSettings::new(&cfg.url)
        .map_err(|e| bad(&e))?
        .with_discovery_prefix(cfg.discovery_prefix.clone())
        .with_topic_prefix(cfg.topic_prefix.clone());
    if let Some(id) = &cfg.client_id {
        s = s.with_client_id(id.clone());
    }
    if let Some(user) = &cfg.username {
        s = s.with_username(user.clone());
    }
    if let Some(password) = &cfg.password {
        s = s.with_password(password.read().map_err(|e| bad(&e))?);
    }
    if let Some(ca) = &cfg.ca_file {
        s = s.with_ca_file(ca.clone());
    }
    s.validate().map_err(|e| bad(&e))?;
    Ok(s)
}

async fn doctor(config: &Config, out: &mut (dyn Write + Send)) -> Result<u8, Failure> {
    let mut all_ok = true;
    for account in &config.accounts {
        writeln!(out, "{} ({})", account.name, account.source.kind())?;
        for check in source::doctor(account).await {
            all_ok &= check.ok;
            let mark = if check.ok { "ok  " } else { "FAIL" };
            writeln!(out, "  {mark} {:<10} {}", check.name, check.detail)?;
            if let (false, Some(hint)) = (check.ok, &check.hint) {
                writeln!(out, "       hint: {hint}")?;
            }
        }
    }
    Ok(if all_ok { EXIT_OK } else { EXIT_ERROR })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn wait_targets_parse() {
        assert_eq!(parse_target("signed-in"), Ok(Target::SignedIn));
        assert_eq!(
            parse_target("status=away"),
            Ok(Target::Availability(Availability::Away))
        );
        assert!(parse_target("status=asleep").is_err());
        assert!(parse_target("online").is_err());
    }

    #[test]
    fn worst_exit_code_wins() {
        assert_eq!(worst([EXIT_OK, EXIT_SIGNED_OUT]), EXIT_SIGNED_OUT);
        assert_eq!(worst([EXIT_NOT_RUNNING, EXIT_SIGNED_OUT]), EXIT_NOT_RUNNING);
        assert_eq!(worst([EXIT_NOT_RUNNING, EXIT_ERROR, EXIT_OK]), EXIT_ERROR);
        assert_eq!(worst([]), EXIT_OK);
    }
}
