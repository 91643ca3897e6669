//! Request parsing and dispatch: one request in, one reply text out (pure).

use super::format::{
    format_help, format_jstatus, format_jtunables, format_status, format_tunables, format_tuners,
};
use super::{QueryBackend, ERR_INTERNAL, ERR_MALFORMED, ERR_TOO_LONG, QUERIES, REQUEST_MAX};

pub(crate) enum Request<'a> {
    Known(&'static str),
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
    if let Some(&(name, _)) = QUERIES.iter().find(|(name, _)| *name == req) {
        return Ok(Request::Known(name));
    }
    match QUERIES.iter().find(|(name, _)| req.starts_with(name)) {
        Some(&(name, _)) => Ok(Request::Known(name)),
        None => Ok(Request::Unknown(req)),
    }
}

/// Turns one request into its reply text (without the trailing NUL the server appends).
pub fn handle_request(raw: &[u8], backend: &dyn QueryBackend) -> String {
    match parse_request(raw) {
        Err(e) => e.to_string(),
        Ok(Request::Unknown(req)) => {
            let shown: String = req
                .chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect();
            format!(
                "unknown request '{shown}'; supported requests are:\n{}",
                format_help()
            )
        }
        Ok(Request::Known(name)) => match name {
            "help" => format_help(),
            "tuners" => format_tuners(&backend.tuners()),
            "tunables" => format_tunables(&backend.tunables()),
            "jtunables" => format_jtunables(&backend.tunables()),
            "summary" => backend.summary(),
            "status" => format_status(&backend.status()),
            "jstatus" => format_jstatus(&backend.status()),
            "rollback" => backend.rollback(),
            "jchanges" => backend.changes_json(),
            "jpaths" => backend.paths_json(),
            "advice" => backend.advice(),
            "jadvice" => backend.advice_json(),
            _ => ERR_INTERNAL.to_string(),
        },
    }
}
