//! What the engine records as it works: the ledger of changes (summary, rollback, advice),
//! the persisted original values, and the counters the metrics read. Written by the engine
//! only; read by the reports.

pub mod ledger;
pub mod originals;
pub mod stats;
