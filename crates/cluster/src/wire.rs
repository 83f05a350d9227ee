//! The message of one observation batch on an account's subject.

use imstatus_core::{
    AccountId, CodedError, ErrorCode, Event, Snapshot, SourceKind, Status, Timestamp,
};
use serde::{Deserialize, Serialize};

/// The largest batch message a gateway decodes (a snapshot with a large roster fits well
/// below; NATS's own default `max_payload` is 1 MiB).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// One observation batch of one account as published: the events the watcher's tracker
/// emitted (numbered by that watcher; gateways renumber them by stream sequence) and the
/// account's whole state after them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// The watcher that wrote it (`<host>-<pid>-<start time>`).
    pub writer: String,
    /// The account.
    pub account: AccountId,
    /// Its source kind.
    pub source: SourceKind,
    /// The stream sequence of this account's previous message (0: none), which the server
    /// checked before storing this one: a gateway that did not apply exactly that message
    /// last for this account missed some and shows a resync snapshot instead.
    pub prev: u64,
    /// The events, in order.
    pub events: Vec<Event>,
    /// The account's state after the events.
    pub snapshot: Snapshot,
    /// When the batch was observed.
    pub time: Timestamp,
    /// The error keeping the account's source down, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_down: Option<(ErrorCode, String)>,
    /// The watcher dropped earlier batches of this account (its queue was full): the events
    /// do not continue the previous message.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost: bool,
}

impl Batch {
    /// Encodes it as JSON.
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Decodes a message, refusing one above `MAX_BATCH_BYTES` (1 MiB).
    pub fn decode(bytes: &[u8]) -> Result<Batch, String> {
        if bytes.len() > MAX_BATCH_BYTES {
            return Err(format!(
                "{} bytes, more than {MAX_BATCH_BYTES}",
                bytes.len()
            ));
        }
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// A gateway's request to the owner of `account`'s shard: set this status (`PUT …/status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetStatus {
    /// The account.
    pub account: AccountId,
    /// The status to set.
    pub status: Status,
}

/// The owner's answer to a [`SetStatus`]: `{}` when the source set it, else the source's error
/// (`{"error":"unsupported","detail":"…"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetStatusReply {
    /// The error's code, if the source refused or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorCode>,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl SetStatusReply {
    /// The reply for a source's answer.
    pub fn new(result: Result<(), CodedError>) -> Self {
        match result {
            Ok(()) => SetStatusReply {
                error: None,
                detail: String::new(),
            },
            Err(e) => SetStatusReply {
                error: Some(e.code),
                detail: e.detail,
            },
        }
    }

    /// The source's answer again.
    pub fn into_result(self) -> Result<(), CodedError> {
        match self.error {
            None => Ok(()),
            Some(code) => Err(CodedError::new(code, self.detail)),
        }
    }
}
