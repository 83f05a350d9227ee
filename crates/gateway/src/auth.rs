//! Bearer tokens: stored as SHA-256, compared in constant time, each limited to accounts.

use std::borrow::{Borrow, Cow};
use std::cell::Cell;
use std::collections::HashSet;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;

use axum::http::{header, HeaderMap, Uri};
use imstatus_config::TokenConfig;
use imstatus_core::AccountId;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The SHA-256 of a token, as `[[serve.token]] sha256` stores it (hex-encode it for the
/// config, e.g. with [`hash_token_hex`]).
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The SHA-256 of a token as 64 lowercase hex digits, ready for `sha256 = "…"`.
pub fn hash_token_hex(token: &str) -> String {
    hash_token(token)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Which accounts a token may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// `*`: every account.
    All,
    /// Only these.
    Only(HashSet<AccountId>),
}

/// One configured token.
#[derive(Debug)]
pub(crate) struct Token {
    pub(crate) name: String,
    sha256: [u8; 32],
    pub(crate) scope: Scope,
    pub(crate) write: bool,
}

/// The configured tokens; empty = open (loopback-only) mode.
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    tokens: Vec<Arc<Token>>,
}

impl Tokens {
    pub(crate) fn new(config: &[TokenConfig]) -> Self {
        let tokens = config
            .iter()
            .map(|t| {
                let scope = if t.accounts.iter().any(|a| a.trim() == "*") {
                    Scope::All
                } else {
                    Scope::Only(
                        t.accounts
                            .iter()
                            .map(|a| AccountId::new(a.trim()))
                            .collect(),
                    )
                };
                Arc::new(Token {
                    name: t.name.clone(),
                    sha256: t.sha256,
                    scope,
                    write: t.write,
                })
            })
            .collect();
        Tokens { tokens }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Token> {
        self.tokens.iter().map(|t| &**t)
    }

    /// The token whose hash matches, comparing against every configured hash in constant time
    /// (no early exit, no data-dependent comparison of hash bytes).
    fn find(&self, presented: &str) -> Option<usize> {
        let hash = hash_token(presented);
        let mut found = None;
        for (i, t) in self.tokens.iter().enumerate() {
            if bool::from(t.sha256.ct_eq(&hash)) {
                found = Some(i);
            }
        }
        found
    }
}

/// The bearer token a connection last presented and had accepted, kept by that connection
/// (`accept.rs`) so that its next requests with the same `Authorization` header skip the
/// token's SHA-256 ([`Access::authenticate_on`]): the largest part of a plain read's CPU on a
/// processor without SHA instructions. What a request presents is compared with this
/// connection's own accepted token only, never with another connection's or with the
/// configuration, in constant time for equal lengths (a different length fails at once: the
/// most a request learns is the length of the token this connection presented before); a
/// token that fails is not kept. Not `Debug`: it holds a secret.
#[derive(Default)]
pub(crate) struct Remembered(Cell<Option<(Box<[u8]>, usize)>>);

impl Remembered {
    /// The index in [`Tokens`] of the token this connection presented before, if `presented`
    /// is the same.
    fn index_of(&self, presented: &str) -> Option<usize> {
        let last = self.0.take()?;
        let same = bool::from(last.0.ct_eq(presented.as_bytes()));
        let i = last.1;
        self.0.set(Some(last));
        same.then_some(i)
    }
}

/// Who is asking: a configured token, or anyone in open mode (no tokens configured, loopback
/// only; read-only unless `[serve] tokenless_write = true`). Extracted from `Authorization: Bearer <token>` or, for clients that cannot set
/// headers (`EventSource`, `<img src>`, browser WebSockets), the `access_token` query
/// parameter (RFC 6750 §2.3).
#[derive(Clone, Debug)]
pub struct Caller {
    /// `None` in open mode.
    token: Option<Arc<Token>>,
    /// In open mode: may it set status (`tokenless_write`)?
    open_write: bool,
}

/// A [`Caller`] borrowed from the gateway's tokens, for a request answered while they are at
/// hand (the direct path, [`crate::fast`]): no reference count to bump, which both worker
/// threads would write on every request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Access<'a> {
    /// `None` in open mode.
    token: Option<&'a Arc<Token>>,
    /// In open mode: may it set status (`tokenless_write`)?
    open_write: bool,
}

impl<'a> Access<'a> {
    /// Authenticates a request by its headers and URI; `tokenless_write` is what open mode
    /// may do.
    pub(crate) fn authenticate(
        tokens: &'a Tokens,
        tokenless_write: bool,
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<Access<'a>, ApiError> {
        let found = Access::check(tokens, headers, uri)?;
        Ok(Access::with(found.map(|(_, token)| token), tokenless_write))
    }

    /// [`Access::authenticate`] for a request on a connection that remembers the bearer token
    /// it presented last ([`Remembered`]): the same answer, without hashing the same token
    /// again.
    pub(crate) fn authenticate_on(
        tokens: &'a Tokens,
        tokenless_write: bool,
        headers: &HeaderMap,
        uri: &Uri,
        remembered: &Remembered,
    ) -> Result<Access<'a>, ApiError> {
        let presented = bearer(headers).ok().flatten();
        if let Some(token) = presented
            .and_then(|p| remembered.index_of(p))
            .and_then(|i| tokens.tokens.get(i))
        {
            return Ok(Access::with(Some(token), tokenless_write));
        }
        let found = Access::check(tokens, headers, uri)?;
        if let (Some(presented), Some((i, _))) = (presented, found) {
            remembered.0.set(Some((presented.as_bytes().into(), i)));
        }
        Ok(Access::with(found.map(|(_, token)| token), tokenless_write))
    }

    /// Checks a request's credentials: `Ok(None)` in open mode (on a loopback `Host`), the
    /// matching token and its index in `tokens` otherwise.
    fn check(
        tokens: &'a Tokens,
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<Option<(usize, &'a Arc<Token>)>, ApiError> {
        if tokens.is_empty() {
            check_loopback_host(headers)?;
            return Ok(None);
        }
        let presented = match bearer(headers)? {
            Some(t) => Cow::Borrowed(t),
            None => match query_token(uri) {
                Some(t) => Cow::Owned(t),
                None => {
                    return Err(ApiError::unauthorized(
                        "this gateway needs a bearer token (Authorization: Bearer <token>)",
                    ))
                }
            },
        };
        tokens
            .find(&presented)
            .and_then(|i| tokens.tokens.get(i).map(|token| Some((i, token))))
            .ok_or_else(ApiError::invalid_token)
    }

    /// The caller with `token`, or anyone in open mode (writing if `tokenless_write`).
    fn with(token: Option<&'a Arc<Token>>, tokenless_write: bool) -> Access<'a> {
        Access {
            token,
            open_write: token.is_none() && tokenless_write,
        }
    }

    /// May this caller see `account`? (It may still not exist.)
    pub(crate) fn can_see<Q>(self, account: &Q) -> bool
    where
        AccountId: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self.token {
            None => true,
            Some(t) => match &t.scope {
                Scope::All => true,
                Scope::Only(set) => set.contains(account),
            },
        }
    }

    /// The caller with its own reference to the token.
    fn to_owned(self) -> Caller {
        Caller {
            token: self.token.cloned(),
            open_write: self.open_write,
        }
    }
}

impl Caller {
    /// The caller, borrowed.
    pub(crate) fn access(&self) -> Access<'_> {
        Access {
            token: self.token.as_ref(),
            open_write: self.open_write,
        }
    }

    /// Is this open mode (no tokens configured)?
    pub(crate) fn is_open(&self) -> bool {
        self.token.is_none()
    }

    /// May this caller see `account`? (It may still not exist.)
    pub fn can_see(&self, account: &AccountId) -> bool {
        self.access().can_see(account)
    }

    /// May this caller set status? A write token, or open mode with `tokenless_write`.
    pub fn can_write(&self) -> bool {
        self.token.as_ref().map_or(self.open_write, |t| t.write)
    }

    /// May this caller see every account?
    pub fn sees_all(&self) -> bool {
        self.token
            .as_ref()
            .is_none_or(|t| matches!(t.scope, Scope::All))
    }

    /// The token's name, for logs.
    pub fn name(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.name.as_str())
    }

    /// Authenticates a request by its headers and URI ([`Access::authenticate`], with its own
    /// reference to the token).
    pub(crate) fn authenticate(
        tokens: &Tokens,
        tokenless_write: bool,
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<Caller, ApiError> {
        Access::authenticate(tokens, tokenless_write, headers, uri).map(Access::to_owned)
    }
}

/// The token of an `Authorization: Bearer` header, `None` without the header.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not ASCII"))?;
    let mut parts = value.trim().splitn(2, ' ');
    let scheme = parts.next().unwrap_or_default();
    let token = parts.next().unwrap_or_default().trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::unauthorized(
            "the Authorization header must be `Bearer <token>`",
        ));
    }
    Ok(Some(token))
}

/// The `access_token` query parameter, percent-decoded.
fn query_token(uri: &Uri) -> Option<String> {
    query_param(uri, "access_token").filter(|t| !t.is_empty())
}

/// One query parameter, percent-decoded (`+` is a space); `None` if absent or badly encoded.
pub(crate) fn query_param(uri: &Uri, key: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(k).as_deref() == Some(key) {
            percent_decode(v)
        } else {
            None
        }
    })
}

/// Every query parameter, percent-decoded; an error names the first badly encoded one.
pub(crate) fn query_params(uri: &Uri) -> Result<Vec<(String, String)>, String> {
    let Some(query) = uri.query() else {
        return Ok(Vec::new());
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match (percent_decode(k), percent_decode(v)) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err(format!(
                    "the query parameter `{}` is not valid percent-encoded UTF-8",
                    crate::error::printable(k)
                )),
            }
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// In open mode, only answer requests addressed to a loopback name: a web page whose DNS name
/// was rebound to 127.0.0.1 sends its own name in `Host` and is refused.
fn check_loopback_host(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(host) = headers.get(header::HOST) else {
        return Ok(());
    };
    let ok = host.to_str().ok().is_some_and(is_loopback_host);
    if ok {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "without tokens the gateway answers only requests addressed to localhost or a \
             loopback address (Host header); configure [[serve.token]] to serve other names",
        ))
    }
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    // Strip the port: `[::1]:8470`, `127.0.0.1:8470`, `localhost:8470`.
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inner, _)) => inner,
            None => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use imstatus_config::TokenConfig;

    #[test]
    fn hash_matches_sha256_test_vector() {
        assert_eq!(
            hash_token_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for h in [
            "localhost",
            "localhost:8470",
            "LOCALHOST.",
            "app.localhost:1",
            "127.0.0.1",
            "127.0.0.1:8470",
            "127.1.2.3:80",
            "[::1]:8470",
            "[::1]",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:8470",
            "10.0.0.1",
            "[::2]:1",
            "[::1",
            "localhost.evil",
            "",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn query_params_are_percent_decoded() {
        let uri: Uri = "/v1/events?a=1&access_token=s%2Fe+c&x"
            .parse()
            .expect("uri");
        assert_eq!(query_param(&uri, "access_token").as_deref(), Some("s/e c"));
        assert_eq!(query_param(&uri, "x").as_deref(), Some(""));
        assert_eq!(query_param(&uri, "y"), None);
        let bad: Uri = "/?access_token=%zz".parse().expect("uri");
        assert_eq!(query_param(&bad, "access_token"), None);
        let plus: Uri = "/?access_token=%+1".parse().expect("uri");
        assert_eq!(query_param(&plus, "access_token"), None);
        let cut: Uri = "/?access_token=%4".parse().expect("uri");
        assert_eq!(query_param(&cut, "access_token"), None);
    }

    #[test]
    fn bearer_header_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h).ok(), Some(None));
        h.insert(
            header::AUTHORIZATION,
            "bearer  tok ".parse().expect("value"),
        );
        assert_eq!(bearer(&h).ok(), Some(Some("tok")));
        h.insert(header::AUTHORIZATION, "Basic dTpw".parse().expect("value"));
        assert!(bearer(&h).is_err());
        h.insert(header::AUTHORIZATION, "Bearer".parse().expect("value"));
        assert!(bearer(&h).is_err());
    }

    /// What a connection remembers: only a token it presented and had accepted, and only
    /// until it presents another accepted one; the answers are those of a full check.
    #[test]
    fn a_connection_remembers_only_its_accepted_token() {
        let config = |name: &str, accounts: &[&str]| TokenConfig {
            name: name.to_owned(),
            sha256: hash_token(&format!("{name}-secret")),
            accounts: accounts.iter().map(|a| (*a).to_owned()).collect(),
            write: false,
        };
        let tokens = Tokens::new(&[config("all", &["*"]), config("alice", &["alice"])]);
        let uri = Uri::from_static("/v1/accounts/alice");
        let with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, value.parse().expect("value"));
            h
        };
        let remembered = Remembered::default();
        let on = |value: &str| {
            Access::authenticate_on(&tokens, false, &with(value), &uri, &remembered)
                .map(|a| (a.token.map(|t| t.name.as_str()), a.can_see("bob")))
        };
        let held = |r: &Remembered| {
            let last = r.0.take();
            let held = last
                .as_ref()
                .map(|(b, i)| (String::from_utf8_lossy(b).into_owned(), *i));
            r.0.set(last);
            held
        };

        assert!(on("Bearer wrong").is_err());
        assert_eq!(held(&remembered), None, "a refused token is not kept");
        assert_eq!(on("Bearer all-secret").ok(), Some((Some("all"), true)));
        assert_eq!(held(&remembered), Some(("all-secret".to_owned(), 0)));
        assert_eq!(remembered.index_of("all-secret"), Some(0));
        for near in ["all-secre", "all-secret2", "All-secret", ""] {
            assert_eq!(remembered.index_of(near), None, "{near:?}");
        }
        assert_eq!(on("Bearer all-secret").ok(), Some((Some("all"), true)));
        assert!(on("Bearer all-secre").is_err(), "a prefix is refused");
        assert!(on("Basic YWxsLXNlY3JldA==").is_err());
        assert_eq!(held(&remembered), Some(("all-secret".to_owned(), 0)));
        assert_eq!(on("Bearer alice-secret").ok(), Some((Some("alice"), false)));
        assert_eq!(held(&remembered), Some(("alice-secret".to_owned(), 1)));
        assert_eq!(on("Bearer all-secret").ok(), Some((Some("all"), true)));

        let query = Remembered::default();
        let by_query = Uri::from_static("/v1/accounts/alice?access_token=all-secret");
        let access = Access::authenticate_on(&tokens, false, &HeaderMap::new(), &by_query, &query);
        assert_eq!(
            access.ok().and_then(|a| a.token).map(|t| t.name.as_str()),
            Some("all")
        );
        assert_eq!(
            held(&query),
            None,
            "only the Authorization header is remembered"
        );

        let open = Tokens::new(&[]);
        let mut loopback = with("Bearer all-secret");
        loopback.insert(header::HOST, "127.0.0.1:8470".parse().expect("value"));
        let none = Remembered::default();
        let access = Access::authenticate_on(&open, true, &loopback, &uri, &none);
        assert!(access.is_ok_and(|a| a.token.is_none() && a.open_write));
        assert_eq!(held(&none), None, "open mode has nothing to remember");
    }
}
