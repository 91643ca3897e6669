//! The queries and request parsing: raw request bytes become a [`Query`] here and
//! nowhere else; [`super::format`] renders its reply.

use super::format;
use super::{QueryBackend, ERR_MALFORMED, ERR_TOO_LONG, REQUEST_MAX};

/// One query of the (C bpftune compatible) protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Query {
    Help,
    Tuners,
    Tunables,
    JTunables,
    Summary,
    Status,
    JStatus,
    Rollback,
    JChanges,
    JPaths,
    Advice,
    JAdvice,
}

impl Query {
    /// Every query in C's table order, which is also the prefix-match order: `tuners`
    /// comes before `tunables`, and `tunersXYZ` means `tuners`.
    pub const ALL: [Query; 12] = [
        Query::Help,
        Query::Tuners,
        Query::Tunables,
        Query::JTunables,
        Query::Summary,
        Query::Status,
        Query::JStatus,
        Query::Rollback,
        Query::JChanges,
        Query::JPaths,
        Query::Advice,
        Query::JAdvice,
    ];

    /// The request name.
    pub const fn name(self) -> &'static str {
        match self {
            Query::Help => "help",
            Query::Tuners => "tuners",
            Query::Tunables => "tunables",
            Query::JTunables => "jtunables",
            Query::Summary => "summary",
            Query::Status => "status",
            Query::JStatus => "jstatus",
            Query::Rollback => "rollback",
            Query::JChanges => "jchanges",
            Query::JPaths => "jpaths",
            Query::Advice => "advice",
            Query::JAdvice => "jadvice",
        }
    }

    /// Its line in the `help` reply.
    pub const fn help(self) -> &'static str {
        match self {
            Query::Help => "list supported queries",
            Query::Tuners => "show state of tuners",
            Query::Tunables => "show list of tunables",
            Query::JTunables => "show list of tunables(json)",
            Query::Summary => "show summary of changes",
            Query::Status => "show status of tunables",
            Query::JStatus => "show status of tunables(json)",
            Query::Rollback => "show changes needed to roll back",
            Query::JChanges => "show recent change records(json)",
            Query::JPaths => "show per-path learning state(json)",
            Query::Advice => "show sysctl.d fragment of changes",
            Query::JAdvice => "show sysctl.d advice(json)",
        }
    }

    /// The query `req` names: matched exactly, else the first whose name `req` starts
    /// with (C's `strncmp(req, name, strlen(name))`).
    pub fn parse(req: &str) -> Option<Query> {
        Query::ALL
            .iter()
            .find(|q| q.name() == req)
            .or_else(|| Query::ALL.iter().find(|q| req.starts_with(q.name())))
            .copied()
    }
}

pub(crate) enum Request<'a> {
    Known(Query),
    Unknown(&'a str),
}

/// Parses raw request bytes. `Err` carries the error reply.
pub(crate) fn parse_request(raw: &[u8]) -> Result<Request<'_>, &'static str> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let body = raw[..end].trim_ascii_end();
    if body.len() > REQUEST_MAX {
        return Err(ERR_TOO_LONG);
    }
    let req = std::str::from_utf8(body).map_err(|_| ERR_MALFORMED)?;
    if req.is_empty() {
        return Err(ERR_MALFORMED);
    }
    Ok(match Query::parse(req) {
        Some(q) => Request::Known(q),
        None => Request::Unknown(req),
    })
}

/// Turns one request into its reply text (without the trailing NUL the server appends).
pub fn handle_request(raw: &[u8], backend: &dyn QueryBackend) -> String {
    match parse_request(raw) {
        Err(e) => e.to_string(),
        Ok(Request::Unknown(req)) => format::unknown(req),
        Ok(Request::Known(q)) => format::reply(q, backend),
    }
}
