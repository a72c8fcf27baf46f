//! Instance logs, prefixed with the instance's name and coloured per service, as foreman and
//! docker compose show them; the supervisor's own notes about an instance go the same way.

use std::io::IsTerminal;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

const COLORS: [u8; 6] = [36, 33, 32, 35, 34, 31];

/// Whether to colour prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStyle {
    Color,
    Plain,
}

impl LogStyle {
    /// Colour when standard output is a terminal and `NO_COLOR` is not set.
    pub fn detect() -> LogStyle {
        if std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
            LogStyle::Color
        } else {
            LogStyle::Plain
        }
    }

    pub(crate) fn for_service(self, index: usize) -> Prefix {
        Prefix {
            color: (self == LogStyle::Color).then(|| COLORS[index % COLORS.len()]),
            name: String::new(),
        }
    }
}

/// The prefix of one instance's lines.
#[derive(Debug, Clone)]
pub(crate) struct Prefix {
    color: Option<u8>,
    name: String,
}

impl Prefix {
    pub(crate) fn named(mut self, name: &str) -> Prefix {
        self.name = name.to_owned();
        self
    }

    fn render(&self, name: &str) -> String {
        match self.color {
            Some(color) => format!("\x1b[{color}m{name:<12} |\x1b[0m"),
            None => format!("{name:<12} |"),
        }
    }

    /// Forwards the child's stdout and stderr, line by line, with the prefix.
    pub(crate) fn attach(&self, child: &mut Child) {
        let prefix = self.render(&self.name);
        if let Some(out) = child.stdout.take() {
            let prefix = prefix.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    println!("{prefix} {line}");
                }
            });
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    println!("{prefix} {line}");
                }
            });
        }
    }

    /// A line from the supervisor about this instance.
    pub(crate) fn note(&self, text: &str) {
        println!("{} [wharf] {text}", self.render(&self.name));
    }
}
