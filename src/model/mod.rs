//! The vocabulary every layer speaks: namespaces and events, tunable descriptors and
//! values, proposals and their outcomes, tuner states and the change record. Plain data
//! and pure arithmetic; this layer imports nothing else of ours (see
//! `docs/architecture.md` and the layer test in `src/layers.rs`).

pub mod change;
pub mod event;
pub mod proposal;
pub mod status;
pub mod tunable;
