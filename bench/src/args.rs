//! The drivers' command lines: `--name value` options, value-less switches and positional
//! arguments, in any order.

use std::str::FromStr;

use crate::fail;

/// A parsed command line.
#[derive(Debug, Default)]
pub struct Args {
    options: Vec<(String, String)>,
    switches: Vec<String>,
    positional: Vec<String>,
}

impl Args {
    /// This process's arguments; `switches` lists the `--names` that take no value (every other
    /// `--name` takes the next argument as its value). Exits with a message when an option
    /// lacks its value.
    pub fn from_env(switches: &[&str]) -> Args {
        Args::parse(std::env::args().skip(1), switches)
    }

    /// Parses `args` (without the program name); see [`Args::from_env`].
    pub fn parse(args: impl IntoIterator<Item = String>, switches: &[&str]) -> Args {
        let mut parsed = Args::default();
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            if switches.contains(&arg.as_str()) {
                parsed.switches.push(arg);
            } else if arg.starts_with("--") {
                let Some(value) = it.next() else {
                    fail(format_args!("{arg} needs a value"))
                };
                parsed.options.push((arg, value));
            } else {
                parsed.positional.push(arg);
            }
        }
        parsed
    }

    /// The value of the last `name` option, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name` parsed as `T`, if given; exits with a message when it does not
    /// parse.
    pub fn opt<T: FromStr>(&self, name: &str) -> Option<T> {
        self.get(name).map(|v| {
            v.parse()
                .unwrap_or_else(|_| fail(format_args!("{name}: not a valid value: {v:?}")))
        })
    }

    /// The value of `name` parsed as `T`, or `default` when it is not given; exits with a
    /// message when it does not parse.
    pub fn value<T: FromStr>(&self, name: &str, default: T) -> T {
        self.opt(name).unwrap_or(default)
    }

    /// The value of `name` as text, or `default`.
    pub fn text(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_owned()
    }

    /// Whether the switch `name` was given.
    pub fn switch(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }

    /// The positional arguments, in order.
    pub fn positional(&self) -> &[String] {
        &self.positional
    }

    /// Positional argument `index` parsed as `T`, or `default` when there are fewer; exits
    /// with a message when it does not parse.
    pub fn nth<T: FromStr>(&self, index: usize, what: &str, default: T) -> T {
        match self.positional.get(index) {
            None => default,
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| fail(format_args!("{what}: not a valid value: {v:?}"))),
        }
    }

    /// The `imstatus` binary to run: `--imstatus PATH`, or the one next to this program (the
    /// same target directory). Exits with a message when there is none.
    pub fn imstatus(&self) -> std::path::PathBuf {
        let path: std::path::PathBuf = self.opt("--imstatus").unwrap_or_else(|| {
            let me = std::env::current_exe()
                .unwrap_or_else(|e| fail(format_args!("this program's path: {e}")));
            me.with_file_name("imstatus")
        });
        if !path.is_file() {
            fail(format_args!(
                "no imstatus binary at {} (cargo build --release -p imstatus, or --imstatus PATH)",
                path.display()
            ));
        }
        path
    }

    /// Exits with a message naming the first option not in `known` (a typo must not silently
    /// measure something else).
    pub fn only(&self, known: &[&str]) -> &Args {
        if let Some((name, _)) = self
            .options
            .iter()
            .find(|(n, _)| !known.contains(&n.as_str()))
        {
            fail(format_args!(
                "unknown option {name} (known: {})",
                known.join(" ")
            ))
        }
        self
    }
}
