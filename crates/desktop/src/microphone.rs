//! The microphone signal: capture streams (*source outputs*) on the sound server, over
//! PulseAudio's native protocol, which PipeWire's `pipewire-pulse` speaks too.
//!
//! The protocol is spoken by the pure-Rust `pulseaudio` crate's message codec (no libpulse):
//! this module frames the messages on a tokio Unix socket, subscribes to source-output and
//! source events, and re-lists the source outputs and sources after each burst of events (one
//! listing in flight, at most one more queued). A source output counts when it is not corked
//! and its source is not the monitor of a sink (screen and loopback recorders).
//!
//! Reads: each stream's corked flag, its source, and its application's name and PID
//! (`application.name`, `application.process.id`); never audio.

use std::io::Cursor;
use std::path::PathBuf;
use std::time::Duration;

use imstatus_core::App;
use pulseaudio::protocol::{
    self, AuthParams, AuthReply, Command, CommandReply, Prop, Props, SetClientNameReply,
    SourceInfo, SourceOutputInfo, SubscriptionEventFacility, SubscriptionMask, TagStructReader,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::config::DesktopConfig;
use crate::coordinator::Report;
use crate::error::{from_io, Error, Result};
use crate::reporter::Reporter;

/// The largest message accepted from the server: a peer claiming more is refused, so a
/// garbage length never makes us allocate gigabytes.
pub(crate) const MAX_MESSAGE: u32 = 4 << 20;
/// How long connecting and the handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one listing may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many applications are reported (a stream flood stays bounded).
pub(crate) const MAX_APPS: usize = 64;
/// Names are cut to this many characters.
const MAX_NAME: usize = 64;

/// Where the sound server listens: the config's `pulse_server`, `PULSE_SERVER`, else
/// `$XDG_RUNTIME_DIR/pulse/native`.
pub(crate) fn socket_path(config: &DesktopConfig) -> Result<PathBuf> {
    let spec = config
        .pulse_server
        .clone()
        .or_else(|| std::env::var("PULSE_SERVER").ok().filter(|s| !s.is_empty()));
    if let Some(spec) = spec {
        let path = spec.strip_prefix("unix:").unwrap_or(&spec);
        if !path.starts_with('/') {
            return Err(Error::Unsupported(format!(
                "sound server `{spec}`: only local `unix:/path` servers are watched"
            )));
        }
        return Ok(PathBuf::from(path));
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir).join("pulse/native")),
        _ => Err(Error::NotRunning(
            "no sound server: neither PULSE_SERVER nor XDG_RUNTIME_DIR is set".into(),
        )),
    }
}

/// The cookie's length in the protocol.
const COOKIE_LENGTH: usize = 256;

/// The authentication cookie: `PULSE_COOKIE`, `~/.config/pulse/cookie`, `~/.pulse-cookie`,
/// else zeros (pipewire-pulse and `auth-anonymous` servers ignore it, but the protocol wants
/// its 256 bytes, as libpulse sends). A secret: never logged.
fn cookie() -> Vec<u8> {
    let mut cookie = cookie_file();
    cookie.resize(COOKIE_LENGTH, 0);
    cookie
}

fn cookie_file() -> Vec<u8> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let candidates = std::env::var_os("PULSE_COOKIE")
        .map(PathBuf::from)
        .into_iter()
        .chain(home.iter().map(|h| h.join(".config/pulse/cookie")))
        .chain(home.iter().map(|h| h.join(".pulse-cookie")));
    for path in candidates {
        if let Ok(bytes) = std::fs::read(&path) {
            if bytes.len() == COOKIE_LENGTH {
                return bytes;
            }
        }
    }
    Vec::new()
}

/// One message from the server.
#[derive(Debug)]
pub(crate) enum Message {
    /// A reply (or error) to request `seq`: the whole frame, to be decoded as what was asked.
    Reply(u32, Vec<u8>),
    /// A subscription event about this facility.
    Event(SubscriptionEventFacility),
    /// Anything else (stream callbacks we never asked for).
    Other,
}

/// A connection to the sound server.
#[derive(Debug)]
pub(crate) struct Pulse {
    stream: UnixStream,
    version: u16,
    seq: u32,
    /// Where, for messages.
    pub(crate) server: String,
    /// What the server calls itself, for doctor.
    pub(crate) name: String,
}

impl Pulse {
    /// Connects, authenticates and names itself `imstatus`.
    pub(crate) async fn connect(config: &DesktopConfig) -> Result<Pulse> {
        let path = socket_path(config)?;
        let server = format!("sound server at unix:{}", path.display());
        let handshake = async {
            let stream = UnixStream::connect(&path)
                .await
                .map_err(|e| from_io(format!("cannot connect to the {server}"), &e))?;
            let mut p = Pulse {
                stream,
                version: protocol::MAX_VERSION,
                seq: 0,
                server: server.clone(),
                name: String::new(),
            };
            let auth = p
                .request::<AuthReply>(Command::Auth(AuthParams {
                    version: protocol::MAX_VERSION,
                    supports_shm: false,
                    supports_memfd: false,
                    cookie: cookie(),
                }))
                .await?;
            p.version = protocol::MAX_VERSION.min(auth.version);
            if p.version < protocol::MIN_VERSION {
                return Err(Error::Unsupported(format!(
                    "the {server} speaks protocol {}, older than {}",
                    p.version,
                    protocol::MIN_VERSION
                )));
            }
            let mut props = Props::new();
            props.set(Prop::ApplicationName, c"imstatus");
            p.request::<SetClientNameReply>(Command::SetClientName(props))
                .await?;
            let info = p
                .request::<protocol::ServerInfo>(Command::GetServerInfo)
                .await?;
            p.name = format!(
                "{} {}",
                text(info.server_name.as_ref().map(|s| s.as_bytes())),
                text(info.server_version.as_ref().map(|s| s.as_bytes()))
            );
            Ok(p)
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout(format!(
                "the {server} did not answer within {HANDSHAKE_TIMEOUT:?}"
            ))),
        }
    }

    async fn send(&mut self, command: Command) -> Result<u32> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let mut buf = Vec::new();
        protocol::write_command_message(&mut buf, seq, &command, self.version)
            .map_err(|e| Error::Protocol(format!("encoding a request: {e}")))?;
        self.stream
            .write_all(&buf)
            .await
            .map_err(|e| from_io(format!("writing to the {}", self.server), &e))?;
        Ok(seq)
    }

    /// Sends `command` and waits for its reply (events in between are dropped: only used
    /// before subscribing).
    async fn request<R: CommandReply>(&mut self, command: Command) -> Result<R> {
        let seq = self.send(command).await?;
        loop {
            if let Message::Reply(s, frame) = self.read().await? {
                if s == seq {
                    return decode::<R>(&frame, self.version);
                }
            }
        }
    }

    /// Reads one message.
    pub(crate) async fn read(&mut self) -> Result<Message> {
        let mut head = [0u8; protocol::DESCRIPTOR_SIZE];
        self.stream.read_exact(&mut head).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::Lost(format!("the {} closed the connection", self.server))
            } else {
                from_io(format!("reading from the {}", self.server), &e)
            }
        })?;
        let length = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let channel = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if length > MAX_MESSAGE {
            return Err(Error::Protocol(format!(
                "the {} announced a {length}-byte message (at most {MAX_MESSAGE} accepted)",
                self.server
            )));
        }
        let mut frame = Vec::with_capacity(head.len() + length as usize);
        frame.extend_from_slice(&head);
        frame.resize(head.len() + length as usize, 0);
        self.stream
            .read_exact(&mut frame[head.len()..])
            .await
            .map_err(|e| from_io(format!("reading from the {}", self.server), &e))?;
        if channel != u32::MAX {
            // Audio data: we never open a stream, so there is none to read.
            return Ok(Message::Other);
        }
        classify(&frame, self.version)
    }
}

/// Decodes what kind of message a frame is.
pub(crate) fn classify(frame: &[u8], version: u16) -> Result<Message> {
    let payload = frame.get(protocol::DESCRIPTOR_SIZE..).unwrap_or_default();
    let mut cursor = Cursor::new(payload);
    let parsed = guard(|| Command::read_tag_prefixed(&mut cursor, version))?;
    match parsed {
        Ok((seq, Command::Reply | Command::Error(_))) => Ok(Message::Reply(seq, frame.to_vec())),
        Ok((_, Command::SubscribeEvent(event))) => Ok(Message::Event(event.event_facility)),
        Ok(_) => Ok(Message::Other),
        Err(protocol::ProtocolError::Timeout) => Ok(Message::Other),
        Err(e) => Err(Error::Protocol(format!(
            "a message the sound server sent: {e}"
        ))),
    }
}

/// Decodes a reply frame as `R`; an error reply is an error.
pub(crate) fn decode<R: CommandReply>(frame: &[u8], version: u16) -> Result<R> {
    let payload = frame.get(protocol::DESCRIPTOR_SIZE..).unwrap_or_default();
    let decoded = guard(|| {
        let mut cursor = Cursor::new(payload);
        let (_, command) = Command::read_tag_prefixed(&mut cursor, version)?;
        match command {
            Command::Reply => {
                let mut ts = TagStructReader::new(&mut cursor, version);
                R::read(&mut ts, version).map(Ok)
            }
            Command::Error(e) => Ok(Err(e)),
            other => Err(protocol::ProtocolError::Invalid(format!(
                "expected a reply, got {:?}",
                other.tag()
            ))),
        }
    })?;
    match decoded {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => match e {
            protocol::PulseError::AccessDenied | protocol::PulseError::AuthKey => {
                Err(Error::Denied(format!(
                    "the sound server refused us ({e:?}); is the PulseAudio cookie readable?"
                )))
            }
            other => Err(Error::Protocol(format!(
                "the sound server answered {other:?}"
            ))),
        },
        Err(e) => Err(Error::Protocol(format!("a reply of the sound server: {e}"))),
    }
}

/// Runs a decoder so that a panic in it on hostile input is an error, not a dead source.
fn guard<T>(f: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| {
        Error::Protocol("the sound server sent a message that could not be decoded".into())
    })
}

/// A property's text, lossily decoded, without its NUL, cut to [`MAX_NAME`] characters.
fn text(bytes: Option<&[u8]>) -> String {
    let bytes = bytes.unwrap_or_default();
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    String::from_utf8_lossy(bytes)
        .chars()
        .take(MAX_NAME)
        .collect()
}

/// The applications capturing from a microphone: source outputs that are not corked and not
/// on a sink's monitor.
pub(crate) fn capturing(outputs: &[SourceOutputInfo], sources: &[SourceInfo]) -> Vec<App> {
    let mut apps: Vec<App> = outputs
        .iter()
        .filter(|o| !o.corked)
        .filter(|o| {
            // An unknown source (it vanished meanwhile) counts as a microphone: better a call
            // reported a moment too long than one missed.
            sources
                .iter()
                .find(|s| s.index == o.source_index)
                .is_none_or(|s| s.monitor_of_sink_index.is_none())
        })
        .map(|o| {
            let name = o
                .props
                .get(Prop::ApplicationName)
                .or_else(|| o.props.get(Prop::ApplicationProcessBinary))
                .map(|b| text(Some(b)))
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| text(Some(o.name.as_bytes())));
            let pid = o
                .props
                .get(Prop::ApplicationProcessId)
                .and_then(|b| text(Some(b)).parse::<u32>().ok());
            App::new(name, pid)
        })
        .collect();
    apps.sort();
    apps.dedup();
    apps.truncate(MAX_APPS);
    apps
}

/// Watches capture streams until the sound server is lost.
pub(crate) async fn run(config: &DesktopConfig, r: &mut Reporter) -> Error {
    match watch(config, r).await {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

async fn watch(config: &DesktopConfig, r: &mut Reporter) -> Result<std::convert::Infallible> {
    let mut p = Pulse::connect(config).await?;
    let subscribe = p
        .send(Command::Subscribe(
            SubscriptionMask::SOURCE_OUTPUT | SubscriptionMask::SOURCE,
        ))
        .await?;
    let mut listing = Some(list(&mut p).await?);
    let mut dirty = false;
    let mut outputs: Option<Vec<SourceOutputInfo>> = None;
    let mut sources: Option<Vec<SourceInfo>> = None;
    let mut last: Option<Vec<App>> = None;
    let mut up = false;
    loop {
        let message = match listing {
            Some(_) => tokio::time::timeout(REPLY_TIMEOUT, p.read())
                .await
                .map_err(|_| {
                    Error::Timeout(format!(
                        "the {} did not list its streams within {REPLY_TIMEOUT:?}",
                        p.server
                    ))
                })??,
            None => p.read().await?,
        };
        match message {
            Message::Reply(seq, frame) if seq == subscribe => {
                decode_ack(&frame, p.version)?;
            }
            Message::Reply(seq, frame) => {
                let Some((outputs_seq, sources_seq)) = listing else {
                    continue;
                };
                if seq == outputs_seq {
                    outputs = Some(decode::<Vec<SourceOutputInfo>>(&frame, p.version)?);
                } else if seq == sources_seq {
                    sources = Some(decode::<Vec<SourceInfo>>(&frame, p.version)?);
                }
                if let (Some(o), Some(s)) = (&outputs, &sources) {
                    let apps = capturing(o, s);
                    if !up {
                        up = true;
                        r.up(format!("{} ({})", p.server, p.name)).await;
                    }
                    if last.as_ref() != Some(&apps) {
                        last = Some(apps.clone());
                        r.send(Report::Microphone(apps)).await;
                    }
                    outputs = None;
                    sources = None;
                    listing = None;
                    if std::mem::take(&mut dirty) {
                        listing = Some(list(&mut p).await?);
                    }
                }
            }
            Message::Event(
                SubscriptionEventFacility::SourceOutput | SubscriptionEventFacility::Source,
            ) => {
                if listing.is_some() {
                    dirty = true;
                } else {
                    listing = Some(list(&mut p).await?);
                }
            }
            Message::Event(_) | Message::Other => {}
        }
    }
}

/// Asks for the source outputs and the sources; returns the two request numbers.
async fn list(p: &mut Pulse) -> Result<(u32, u32)> {
    let outputs = p.send(Command::GetSourceOutputInfoList).await?;
    let sources = p.send(Command::GetSourceInfoList).await?;
    Ok((outputs, sources))
}

/// An empty reply; an error reply is an error.
fn decode_ack(frame: &[u8], version: u16) -> Result<()> {
    let payload = frame.get(protocol::DESCRIPTOR_SIZE..).unwrap_or_default();
    let mut cursor = Cursor::new(payload);
    match guard(|| Command::read_tag_prefixed(&mut cursor, version))? {
        Ok((_, Command::Reply)) => Ok(()),
        Ok((_, Command::Error(e))) => Err(Error::Protocol(format!(
            "the sound server refused to subscribe: {e:?}"
        ))),
        Ok(_) => Err(Error::Protocol("expected an acknowledgement".into())),
        Err(e) => Err(Error::Protocol(format!("a reply of the sound server: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;

    use super::*;

    fn output(
        index: u32,
        source: u32,
        app: &str,
        pid: Option<&str>,
        corked: bool,
    ) -> SourceOutputInfo {
        let mut props = Props::new();
        props.set(Prop::ApplicationName, CString::new(app).expect("no NUL"));
        if let Some(pid) = pid {
            props.set(
                Prop::ApplicationProcessId,
                CString::new(pid).expect("no NUL"),
            );
        }
        SourceOutputInfo {
            index,
            name: CString::new("record").expect("no NUL"),
            source_index: source,
            props,
            corked,
            ..SourceOutputInfo::default()
        }
    }

    fn source(index: u32, monitor_of: Option<u32>) -> SourceInfo {
        SourceInfo {
            index,
            monitor_of_sink_index: monitor_of,
            ..SourceInfo::default()
        }
    }

    #[test]
    fn monitors_and_corked_streams_are_not_a_microphone_in_use() {
        let sources = [source(1, None), source(2, Some(0))];
        let outputs = [
            output(10, 1, "zoom", Some("42"), false),
            output(11, 2, "obs", Some("43"), false),
            output(12, 1, "paused", Some("44"), true),
            output(13, 1, "zoom", Some("42"), false),
            output(14, 1, "odd", Some("not a pid"), false),
        ];
        assert_eq!(
            capturing(&outputs, &sources),
            vec![App::new("odd", None), App::new("zoom", Some(42))]
        );
    }

    #[test]
    fn garbage_frames_are_protocol_errors() {
        let mut frame = vec![0u8; protocol::DESCRIPTOR_SIZE];
        frame.extend_from_slice(b"\xffgarbage");
        assert!(matches!(
            classify(&frame, protocol::MAX_VERSION),
            Err(Error::Protocol(_))
        ));
        assert!(matches!(
            decode::<Vec<SourceInfo>>(&frame, protocol::MAX_VERSION),
            Err(Error::Protocol(_))
        ));
        assert!(matches!(
            decode::<Vec<SourceInfo>>(&[], protocol::MAX_VERSION),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn a_remote_server_is_refused() {
        let config = DesktopConfig {
            pulse_server: Some("tcp:example.test".into()),
            ..DesktopConfig::default()
        };
        assert!(matches!(socket_path(&config), Err(Error::Unsupported(_))));
        let config = DesktopConfig {
            pulse_server: Some("unix:/run/x/native".into()),
            ..DesktopConfig::default()
        };
        assert_eq!(socket_path(&config), Ok(PathBuf::from("/run/x/native")));
    }
}
