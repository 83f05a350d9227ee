//! `[[person]]`: several accounts combined into one answer (`docs/person.md`).
//!
//! A person is checked against the whole file: its accounts must exist (an `[[account]]` or
//! another `[[person]]`), its name must be nobody else's, persons must not contain each other
//! in a cycle, `signals` must be an `[[account]]`, and `sync` must name its own accounts. Every
//! error names the line of the offending name.

use std::collections::{BTreeMap, HashSet};

use imstatus_core::AccountId;
use serde::Deserialize;
use toml::Spanned;

use crate::{valid_name, AccountConfig, ConfigError, Resolver};

/// One `[[person]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonConfig {
    /// What the CLI, API and MQTT call the person (an account name like any other).
    pub name: AccountId,
    /// The accounts combined, in order: `[[account]]`s or other persons.
    pub accounts: Vec<AccountId>,
    /// The desktop-signals account whose activity rules 1 and 3 read, if any.
    pub signals: Option<AccountId>,
    /// The accounts (among `accounts`) whose status imstatus sets while rule 1 or 3 decides.
    pub sync: Vec<AccountId>,
    /// The line of the person's `name`.
    pub line: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPerson {
    name: Spanned<String>,
    accounts: Spanned<Vec<Spanned<String>>>,
    signals: Option<Spanned<String>>,
    sync: Option<Spanned<Vec<Spanned<String>>>>,
}

impl Resolver<'_> {
    /// Resolves every `[[person]]` against the accounts.
    pub(crate) fn persons(
        &self,
        raw: Vec<RawPerson>,
        accounts: &[AccountConfig],
    ) -> Result<Vec<PersonConfig>, ConfigError> {
        let is_account = |n: &str| accounts.iter().any(|a| a.name.as_str() == n);
        let names: HashSet<String> = raw
            .iter()
            .map(|p| p.name.get_ref().trim().to_owned())
            .collect();
        let mut persons: Vec<PersonConfig> = Vec::new();
        for p in raw {
            let line = self.line(p.name.span());
            let name = p.name.get_ref().trim().to_owned();
            if !valid_name(&name) {
                return Err(self.at(
                    line,
                    format!("key `name`: `{name}` must be letters, digits, `-`, `_` or `.`"),
                ));
            }
            if is_account(&name) {
                return Err(self.at(
                    line,
                    format!("key `name`: person `{name}` has the name of an [[account]]; a person is an account itself, so give it a name of its own"),
                ));
            }
            if persons.iter().any(|q| q.name.as_str() == name) {
                return Err(self.at(
                    line,
                    format!("key `name`: person `{name}` is defined twice"),
                ));
            }
            let members_span = p.accounts.span();
            let mut members: Vec<AccountId> = Vec::new();
            for a in p.accounts.into_inner() {
                let m = a.get_ref().trim();
                if !is_account(m) && !names.contains(m) {
                    return Err(self.err(
                        a.span(),
                        format!(
                            "key `accounts`: person `{name}`: no [[account]] or [[person]] named `{m}`"
                        ),
                    ));
                }
                if m == name {
                    return Err(self.err(
                        a.span(),
                        format!("key `accounts`: person `{name}` cannot contain itself"),
                    ));
                }
                if members.iter().any(|x| x.as_str() == m) {
                    return Err(self.err(
                        a.span(),
                        format!("key `accounts`: person `{name}` lists `{m}` twice"),
                    ));
                }
                members.push(AccountId::new(m));
            }
            if members.is_empty() {
                return Err(self.err(
                    members_span,
                    format!("key `accounts`: person `{name}` needs at least one account"),
                ));
            }
            let signals = match p.signals {
                None => None,
                Some(s) => {
                    let n = s.get_ref().trim();
                    if !is_account(n) {
                        let what = if names.contains(n) {
                            format!("`{n}` is a person; signals come from an [[account]] (a `desktop` one)")
                        } else {
                            format!("no [[account]] named `{n}`")
                        };
                        return Err(
                            self.err(s.span(), format!("key `signals`: person `{name}`: {what}"))
                        );
                    }
                    Some(AccountId::new(n))
                }
            };
            let mut sync: Vec<AccountId> = Vec::new();
            for a in p.sync.map(Spanned::into_inner).unwrap_or_default() {
                let n = a.get_ref().trim();
                if !members.iter().any(|m| m.as_str() == n) {
                    return Err(self.err(
                        a.span(),
                        format!(
                            "key `sync`: person `{name}`: `{n}` is not one of its accounts ({})",
                            list(&members)
                        ),
                    ));
                }
                if sync.iter().any(|x| x.as_str() == n) {
                    return Err(self.err(
                        a.span(),
                        format!("key `sync`: person `{name}` lists `{n}` twice"),
                    ));
                }
                sync.push(AccountId::new(n));
            }
            persons.push(PersonConfig {
                name: AccountId::new(name),
                accounts: members,
                signals,
                sync,
                line,
            });
        }
        self.check_cycles(&persons)?;
        Ok(persons)
    }

    /// Refuses persons that contain each other, naming the cycle at the first person in it.
    fn check_cycles(&self, persons: &[PersonConfig]) -> Result<(), ConfigError> {
        let by_name: BTreeMap<&str, &PersonConfig> =
            persons.iter().map(|p| (p.name.as_str(), p)).collect();
        // Iterative depth-first search: the path so far, and each node's next child.
        for start in persons {
            let mut path: Vec<(&PersonConfig, usize)> = vec![(start, 0)];
            let mut done: HashSet<&str> = HashSet::new();
            while let Some((p, next)) = path.last_mut() {
                let p: &PersonConfig = p;
                match p.accounts.get(*next) {
                    None => {
                        done.insert(p.name.as_str());
                        path.pop();
                    }
                    Some(child) => {
                        *next += 1;
                        let Some(c) = by_name.get(child.as_str()) else {
                            continue;
                        };
                        if let Some(at) = path.iter().position(|(q, _)| q.name == c.name) {
                            let mut names: Vec<&str> =
                                path[at..].iter().map(|(q, _)| q.name.as_str()).collect();
                            names.push(c.name.as_str());
                            return Err(self.at(
                                path[at].0.line,
                                format!(
                                    "key `accounts`: persons contain each other in a cycle: {}",
                                    names.join(" → ")
                                ),
                            ));
                        }
                        if !done.contains(c.name.as_str()) {
                            path.push((c, 0));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn list(ids: &[AccountId]) -> String {
    ids.iter()
        .map(AccountId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
