//! The crate's one error type.

/// What went wrong with settings given in code (the config reader reports its own errors with
/// the line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker URL cannot be used.
    #[error("url `{url}`: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// Why.
        reason: String,
    },
}
