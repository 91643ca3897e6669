//! Everything the daemon says: log lines and the journal, the query server and client,
//! and the Prometheus metrics. Rendered from the model and the records; never decides.

pub mod journal;
pub mod log;
pub mod metrics;
pub mod query;
