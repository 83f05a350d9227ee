//! A private PulseAudio with a null sink and a null source (`docs/local-signals.md` §1), and
//! `parecord` as a capture client.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{find_program, kill_child, read_log, stop_child};
use crate::{try_wait_until, Error, Result};

/// How long PulseAudio may take to answer (25-38 ms measured).
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long PulseAudio and parecord get after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// A PulseAudio daemon in its own runtime dir and `HOME`, listening on a socket there with
/// anonymous authentication, with a null sink `speaker` and a null source `mic`; no ALSA, no
/// udev, no autospawn. Runs as our child (`--daemonize=no`); dropping it stops it.
#[derive(Debug)]
pub struct PulseAudio {
    child: Option<Child>,
    pid: u32,
    socket: PathBuf,
    log: PathBuf,
    pactl: PathBuf,
    parecord: PathBuf,
    // Last, so that it is deleted after the daemon is stopped.
    dir: TempDir,
}

impl PulseAudio {
    /// Starts the daemon and returns once `pactl info` answers.
    pub fn start() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("imstatus-pulse-")
            .tempdir()
            .map_err(|e| Error::io("creating the PulseAudio temp dir", e))?;
        for sub in ["run", "home"] {
            let p = dir.path().join(sub);
            std::fs::create_dir(&p)
                .map_err(|e| Error::io(format!("creating {}", p.display()), e))?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io(format!("chmod {}", p.display()), e))?;
        }
        let mut pa = PulseAudio {
            child: None,
            pid: 0,
            socket: dir.path().join("pulse.sock"),
            log: dir.path().join("pulseaudio.log"),
            pactl: find_program("pactl", "pulseaudio-utils")?,
            parecord: find_program("parecord", "pulseaudio-utils")?,
            dir,
        };
        pa.spawn()?;
        Ok(pa)
    }

    fn spawn(&mut self) -> Result<()> {
        let program = find_program("pulseaudio", "pulseaudio")?;
        let mut child = Command::new(program)
            .args([
                "-n",
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--disallow-exit",
            ])
            .arg(format!("--log-target=file:{}", self.log.display()))
            .arg("-L")
            .arg(format!(
                "module-native-protocol-unix socket={} auth-anonymous=1",
                self.socket.display()
            ))
            .args(["-L", "module-null-sink sink_name=speaker"])
            .args(["-L", "module-null-source source_name=mic"])
            .envs(self.env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                File::create(self.dir.path().join("pulseaudio.stderr"))
                    .map_err(|e| Error::io("creating pulseaudio.stderr", e))?,
            )
            .spawn()
            .map_err(|e| Error::io("spawning pulseaudio", e))?;
        let pactl = self.pactl.clone();
        let env = self.env();
        let ready = try_wait_until("PulseAudio to answer `pactl info`", START_DEADLINE, || {
            if let Some(status) = child
                .try_wait()
                .map_err(|e| Error::io("reaping pulseaudio", e))?
            {
                return Err(Error::Exited {
                    what: "pulseaudio".into(),
                    status: status.to_string(),
                    context: String::new(),
                });
            }
            let ok = Command::new(&pactl)
                .arg("info")
                .envs(env.clone())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            Ok(ok.then_some(()))
        });
        if let Err(e) = ready {
            let _ = stop_child(&mut child, "pulseaudio", TERM_GRACE);
            return Err(e.with_log("pulseaudio's log", &self.log()));
        }
        self.pid = child.id();
        self.child = Some(child);
        Ok(())
    }

    /// The environment a client of this server needs (`PULSE_SERVER`, a private
    /// `XDG_RUNTIME_DIR` and `HOME`), so that it never finds another one.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("PULSE_SERVER".into(), self.server()),
            (
                "XDG_RUNTIME_DIR".into(),
                self.dir.path().join("run").display().to_string(),
            ),
            (
                "HOME".into(),
                self.dir.path().join("home").display().to_string(),
            ),
        ]
    }

    /// The server address, `unix:/…/pulse.sock`.
    pub fn server(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    /// The socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// What the daemon logged.
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// Starts `parecord` capturing from `device` (`mic`, or `speaker.monitor`) into
    /// /dev/null; returns once it runs (its stream appears within milliseconds).
    pub fn record(&self, device: &str) -> Result<Recorder> {
        let child = Command::new(&self.parecord)
            .arg(format!("--device={device}"))
            .arg("/dev/null")
            .envs(self.env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::io("spawning parecord", e))?;
        Ok(Recorder { child })
    }

    /// Kills the daemon with SIGKILL (a crash) and reaps it.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child, "pulseaudio")?;
        }
        Ok(())
    }

    /// Starts the daemon again on the same socket (after [`PulseAudio::kill`]).
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        // A socket left by the killed daemon would make the new one fail to bind.
        let _ = std::fs::remove_file(&self.socket);
        self.spawn()
    }

    /// Stops the daemon (SIGTERM, SIGKILL after 5 s); does nothing if stopped.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, "pulseaudio", TERM_GRACE)?;
        }
        Ok(())
    }
}

impl Drop for PulseAudio {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A running `parecord`; dropping it stops it.
#[derive(Debug)]
pub struct Recorder {
    child: Child,
}

impl Recorder {
    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it (SIGTERM) and reaps it.
    pub fn stop(&mut self) -> Result<()> {
        stop_child(&mut self.child, "parecord", TERM_GRACE).map(drop)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
