//! What the query server sees: the ledger, plus live reads of every managed sysctl.

use std::sync::{Arc, Mutex};

use crate::engine::lock;
use crate::kernel::netns::Target;
use crate::kernel::sysctl::{ProcSysctl, SysctlStore};
use crate::model::tunable::TunableKind;
use crate::record::ledger::{Ledger, TunerMeta};
use crate::report::query::{format, QueryBackend, StatusRow, TunableRow, TunerRow};

/// The query server's view: the ledger plus live reads.
pub(super) struct Backend {
    pub(super) ledger: Arc<Mutex<Ledger>>,
    pub(super) sysctl: ProcSysctl,
}

impl QueryBackend for Backend {
    fn tuners(&self) -> Vec<TunerRow> {
        let l = lock(&self.ledger);
        l.tuners
            .iter()
            .enumerate()
            .map(|(id, t)| TunerRow {
                name: t.name.to_string(),
                state: t.state.as_str().to_string(),
                origin: l.origins.get(&id).cloned(),
            })
            .collect()
    }

    fn tunables(&self) -> Vec<TunableRow> {
        let l = lock(&self.ledger);
        l.tuners
            .iter()
            .flat_map(|t| {
                t.tunables.iter().map(|d| TunableRow {
                    tuner: t.name.to_string(),
                    name: d.name.to_string(),
                    is_string: d.string,
                    num_values: d.num_values,
                    is_sysctl: d.kind == TunableKind::Sysctl,
                    namespaced: d.namespaced,
                })
            })
            .collect()
    }

    fn status(&self) -> Vec<StatusRow> {
        let metas: Vec<TunerMeta> = lock(&self.ledger).tuners.clone();
        metas
            .iter()
            .flat_map(|t| {
                t.tunables
                    .iter()
                    .filter(|d| d.kind == TunableKind::Sysctl)
                    .map(|d| StatusRow {
                        tuner: t.name.to_string(),
                        name: d.name.to_string(),
                        value: self
                            .sysctl
                            .read(&Target::Global, d.name, d.string, d.num_values)
                            .ok(),
                    })
            })
            .collect()
    }

    fn summary(&self) -> String {
        format::summary(&lock(&self.ledger))
    }

    fn rollback(&self) -> String {
        format::rollback(&lock(&self.ledger))
    }

    fn changes_json(&self) -> String {
        format::changes_json(&lock(&self.ledger))
    }

    fn paths_json(&self) -> String {
        format::paths_json(&lock(&self.ledger))
    }

    fn advice(&self) -> String {
        format::advice(&lock(&self.ledger))
    }

    fn advice_json(&self) -> String {
        format::advice_json(&lock(&self.ledger))
    }
}
