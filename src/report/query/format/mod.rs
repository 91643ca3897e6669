//! The one place that renders reply text: C bpftune's printf formats, byte for byte
//! ([`text`]), the JSON tables ([`json`]), the replies rendered from the change ledger
//! ([`ledger`], [`advice`]), and which of them answers each [`Query`] ([`reply`]).

mod advice;
mod json;
mod ledger;
mod text;

pub use advice::{advice, advice_json};
pub use json::{format_jstatus, format_jtunables};
pub use ledger::{changes_json, paths_json, rollback, summary, tuner_summary};
pub use text::{format_help, format_status, format_tunables, format_tuners};

use super::{Query, QueryBackend};

/// The reply to `q`: the tables are rendered here from the backend's rows; the ledger
/// replies come from the backend, which renders them with this module's
/// [`summary`] … [`advice_json`] (the ledger lives with the daemon).
pub fn reply(q: Query, backend: &dyn QueryBackend) -> String {
    match q {
        Query::Help => format_help(),
        Query::Tuners => format_tuners(&backend.tuners()),
        Query::Tunables => format_tunables(&backend.tunables()),
        Query::JTunables => format_jtunables(&backend.tunables()),
        Query::Summary => backend.summary(),
        Query::Status => format_status(&backend.status()),
        Query::JStatus => format_jstatus(&backend.status()),
        Query::Rollback => backend.rollback(),
        Query::JChanges => backend.changes_json(),
        Query::JPaths => backend.paths_json(),
        Query::Advice => backend.advice(),
        Query::JAdvice => backend.advice_json(),
    }
}

/// The reply to a request that names no query: the request (control characters
/// escaped, so a reply cannot carry them raw) and the help listing.
pub fn unknown(req: &str) -> String {
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

fn type_name(is_string: bool) -> &'static str {
    if is_string {
        "string"
    } else {
        "integer"
    }
}
