//! Plugin directories: loads trusted `*_tuner.so` files at start-up and while running
//! (inotify: a new file is loaded, a removed or replaced one unloaded — its BPF
//! programs detached, its fini called — while its changes stay in the ledger for
//! rollback). Every refusal is logged once per file version, with the reason.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::bpf::{LoadConfig, SharedMaps};
use crate::engine::{lock, Engine};
use crate::plugin::crash::{self, Quarantine, Verdict};
use crate::plugin::{trust, PluginError, PluginSpec, PluginTuner};
use crate::record::ledger::TunerMeta;
use crate::tuner::{allow_matches, StartCtx, Tuner, TunerState};

/// What identifies one version of a file: a replaced, rewritten or re-permissioned file
/// is another plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    mode: u32,
    uid: u32,
}

impl Identity {
    /// What the crash quarantine compares: the file's content version, not its
    /// permissions.
    fn file_id(&self) -> crash::FileId {
        crash::FileId {
            dev: self.dev,
            ino: self.ino,
            size: self.size,
            mtime_ns: self.mtime_ns,
        }
    }
}

fn identity(path: &Path) -> Option<Identity> {
    std::fs::symlink_metadata(path).ok().map(|md| identity_of(&md))
}

fn identity_of(md: &std::fs::Metadata) -> Identity {
    Identity {
        dev: md.dev(),
        ino: md.ino(),
        size: md.size(),
        mtime_ns: md
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(md.mtime_nsec()),
        mode: md.mode(),
        uid: md.uid(),
    }
}

struct LoadedPlugin {
    id: usize,
    name: &'static str,
    ident: Identity,
    failed: std::rc::Rc<std::cell::Cell<bool>>,
}

/// The daemon's plugin directories and the plugins loaded from them.
pub(super) struct Plugins {
    dirs: Vec<PathBuf>,
    allow: Vec<String>,
    builtin: Vec<&'static str>,
    config: LoadConfig,
    cgroup: Option<OwnedFd>,
    inotify: Option<Inotify>,
    /// Directories watched, by watch descriptor: a removed directory's watch goes away
    /// (IN_IGNORED) and the directory is waited for again.
    watched: Vec<(WatchDescriptor, PathBuf)>,
    /// Directories that did not exist (or could not be watched) yet: retried every tick,
    /// so a plugin directory created after start-up is watched and scanned then.
    unwatched: Vec<PathBuf>,
    loaded: BTreeMap<PathBuf, LoadedPlugin>,
    /// Last refusal logged per file (file version, reason): logged once.
    refused: BTreeMap<PathBuf, (Option<Identity>, String)>,
    /// File versions that crashed the daemon in an earlier run.
    quarantine: Quarantine,
}

/// Files whose name says they are meant as plugins (`*_tuner.so*`), valid or not: the
/// invalid ones are refused with a reason, anything else is not ours.
fn looks_like_plugin(name: &str) -> bool {
    name.contains("_tuner.so")
}

impl Plugins {
    pub(super) fn new(
        dirs: &[&Path],
        allow: &[String],
        builtin: Vec<&'static str>,
        config: LoadConfig,
        cgroup: Option<BorrowedFd<'_>>,
        quarantine: Quarantine,
    ) -> Plugins {
        let mut uniq: Vec<PathBuf> = Vec::new();
        for d in dirs {
            let p = std::fs::canonicalize(d).unwrap_or_else(|_| d.to_path_buf());
            if !uniq.contains(&p) {
                uniq.push(p);
            }
        }
        let inotify = match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
            Ok(i) => Some(i),
            Err(e) => {
                tracing::info!("not watching plugin directories ({e}); plugins are loaded at start-up only");
                None
            }
        };
        let mut plugins = Plugins {
            unwatched: if inotify.is_some() {
                uniq.clone()
            } else {
                Vec::new()
            },
            dirs: uniq,
            allow: allow.to_vec(),
            builtin,
            config,
            cgroup: cgroup.and_then(|c| c.try_clone_to_owned().ok()),
            inotify,
            watched: Vec::new(),
            loaded: BTreeMap::new(),
            refused: BTreeMap::new(),
            quarantine,
        };
        for d in plugins.watch_new_dirs() {
            tracing::debug!("watching plugin directory {}", d.display());
        }
        for d in &plugins.unwatched {
            tracing::debug!(
                "plugin directory {} does not exist (yet); it is watched once it does",
                d.display()
            );
        }
        plugins
    }

    /// Tries to watch the directories not watched yet; returns those now watched.
    fn watch_new_dirs(&mut self) -> Vec<PathBuf> {
        let Some(ino) = &self.inotify else {
            return Vec::new();
        };
        let mask = AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_ATTRIB
            // Only directories: a file (or a symlink to one) in its place is not ours to
            // watch, and IN_ONLYDIR checks that atomically.
            | AddWatchFlags::IN_ONLYDIR;
        let mut now = Vec::new();
        let mut still = Vec::new();
        for d in std::mem::take(&mut self.unwatched) {
            match ino.add_watch(&d, mask) {
                Ok(wd) => {
                    self.watched.push((wd, d.clone()));
                    now.push(d);
                }
                Err(_) => still.push(d),
            }
        }
        self.unwatched = still;
        now
    }

    /// Once a tick: watches plugin directories that appeared since start-up (or since
    /// they were removed). Whether one did: its files are then to be scanned.
    pub(super) fn rewatch(&mut self) -> bool {
        if self.unwatched.is_empty() {
            return false;
        }
        let now = self.watch_new_dirs();
        for d in &now {
            tracing::info!(
                "plugin directory {} now exists; watching it for plugins",
                d.display()
            );
        }
        !now.is_empty()
    }

    /// The inotify descriptor for the daemon's wait set.
    pub(super) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.inotify.as_ref().map(|i| i.as_fd())
    }

    /// Reads pending inotify events; whether any arrived. A directory whose watch the
    /// kernel dropped (the directory was removed) is waited for again.
    pub(super) fn drain(&mut self) -> bool {
        let Some(ino) = &self.inotify else { return false };
        let mut any = false;
        let mut dropped = Vec::new();
        while let Ok(evs) = ino.read_events() {
            if evs.is_empty() {
                break;
            }
            any = true;
            dropped.extend(
                evs.iter()
                    .filter(|e| e.mask.contains(AddWatchFlags::IN_IGNORED))
                    .map(|e| e.wd),
            );
        }
        for wd in dropped {
            if let Some(i) = self.watched.iter().position(|(w, _)| *w == wd) {
                let (_, d) = self.watched.remove(i);
                tracing::debug!("plugin directory {} is gone; waiting for it again", d.display());
                self.unwatched.push(d);
            }
        }
        any
    }

    /// Names of candidate plugin files now in the directories (for `-a` checks).
    pub(super) fn names_present(dirs: &[&Path]) -> Vec<String> {
        dirs.iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flat_map(|rd| rd.flatten())
            .filter_map(|e| trust::tuner_name(&e.file_name().to_string_lossy()).map(str::to_string))
            .collect()
    }

    fn refuse(&mut self, path: &Path, reason: String) {
        let ident = identity(path);
        let key = (ident, reason);
        if self.refused.get(path) != Some(&key) {
            tracing::warn!("plugin '{}' {}", path.display(), key.1);
            self.refused.insert(path.to_path_buf(), key);
        }
    }

    /// Unloads plugins whose file is gone or changed, and loads new trusted ones.
    pub(super) fn scan(
        &mut self,
        tuners: &mut Vec<Option<Box<dyn Tuner>>>,
        engine: &mut Engine,
        shared: &mut SharedMaps,
    ) {
        let gone: Vec<PathBuf> = self
            .loaded
            .iter()
            .filter(|(p, l)| identity(p) != Some(l.ident))
            .map(|(p, _)| p.clone())
            .collect();
        for p in gone {
            self.unload(&p, tuners, engine, "its file was removed or replaced");
        }
        let mut files: Vec<PathBuf> = self
            .dirs
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flat_map(|rd| rd.flatten())
            .filter(|e| looks_like_plugin(&e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .collect();
        files.sort();
        self.refused.retain(|p, _| files.contains(p));
        for path in files {
            if !self.loaded.contains_key(&path) {
                self.load(&path, tuners, engine, shared);
            }
        }
    }

    fn load(
        &mut self,
        path: &Path,
        tuners: &mut Vec<Option<Box<dyn Tuner>>>,
        engine: &mut Engine,
        shared: &mut SharedMaps,
    ) {
        let Some(ident) = identity(path) else { return };
        // A refused (or disabled) file version is not tried again until it changes.
        if self.refused.get(path).is_some_and(|r| r.0 == Some(ident)) {
            return;
        }
        match self.quarantine.check(path, ident.file_id()) {
            Verdict::Load => {}
            Verdict::Refuse(reason) => return self.refuse(path, reason),
            Verdict::Changed => {
                tracing::info!(
                    "plugin '{}' changed since it crashed bpftune; trying it again",
                    path.display()
                );
                self.quarantine.forget(path);
            }
        }
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(name) = trust::tuner_name(&file) {
            if !allow_matches(&self.allow, name) {
                tracing::debug!("plugin '{}' not in the -a list; not loading it", path.display());
                self.refused
                    .insert(path.to_path_buf(), (Some(ident), "not allowed".into()));
                return;
            }
            if self.builtin.contains(&name) {
                return self.refuse(path, format!("refused: '{name}' is the name of a built-in tuner"));
            }
            if let Some((p, _)) = self.loaded.iter().find(|(_, l)| l.name == name) {
                let msg = format!(
                    "refused: a tuner named '{name}' is already loaded from {}",
                    p.display()
                );
                return self.refuse(path, msg);
            }
        }
        // SAFETY: geteuid has no preconditions. The trusted owner is root (the daemon's
        // uid); a daemon run by another user trusts only its own files.
        let owner = unsafe { libc::geteuid() };
        // Checked through a descriptor that is then what gets loaded (trust::open).
        let checked = match trust::open(path, owner) {
            Ok(c) => c,
            Err(e) => return self.refuse(path, PluginError::from(e).to_string()),
        };
        if identity_of(&checked.metadata) != ident {
            // Replaced between the quarantine check above and the open: the crash record
            // and the quarantine must be about the version loaded. Its inotify event
            // brings another scan.
            tracing::debug!(
                "plugin '{}' changed while being checked; trying again later",
                path.display()
            );
            return;
        }
        let crash_record = crash::record_prefix(path, ident.file_id());
        // dlopen runs the plugin's constructors and the descriptor function: its code.
        let inside = crash::Inside::enter(&crash_record, "load");
        let opened = PluginSpec::load(checked);
        drop(inside);
        let spec = match opened {
            Ok(s) => s,
            Err(e) => return self.refuse(path, e.to_string()),
        };
        if identity(path) != Some(ident) {
            // Changed while we opened it (what was loaded is the checked version, but
            // the path names another by now, or it is still being written). Its next
            // inotify event (IN_CLOSE_WRITE at the latest) brings another scan.
            tracing::debug!(
                "plugin '{}' changed while being opened; trying again later",
                path.display()
            );
            return;
        }
        let mut tuner = PluginTuner::new(spec, crash_record);
        let name = tuner.name();
        let id = engine.add_tuner(TunerMeta {
            name,
            state: TunerState::Inactive,
            tunables: tuner.tunables(),
            scenarios: tuner.scenarios(),
        });
        lock(engine.ledger())
            .origins
            .insert(id, path.display().to_string());
        while tuners.len() < id {
            tuners.push(None);
        }
        let started = tuner.start(StartCtx {
            shared,
            config: self.config,
            tuner_id: id as u32,
            programs: &[],
            cgroup: self.cgroup.as_ref().map(|c| c.as_fd()),
            env: &mut engine.ctx(id),
        });
        match started {
            Ok(()) => {
                engine.set_tuner_state(id, TunerState::Active);
                tracing::info!("plugin tuner '{name}' (id {id}) loaded from {}", path.display());
                self.loaded.insert(
                    path.to_path_buf(),
                    LoadedPlugin {
                        id,
                        name,
                        ident,
                        failed: tuner.failed_flag(),
                    },
                );
                self.refused.remove(path);
                tuners.push(Some(Box::new(tuner)));
            }
            Err(e) => {
                tuners.push(None);
                self.refuse(path, format!("could not be started: {e}"));
            }
        }
    }

    fn unload(&mut self, path: &Path, tuners: &mut [Option<Box<dyn Tuner>>], engine: &mut Engine, why: &str) {
        let Some(l) = self.loaded.remove(path) else { return };
        if let Some(slot) = tuners.get_mut(l.id) {
            if let Some(mut t) = slot.take() {
                t.stop();
            }
        }
        engine.set_tuner_state(l.id, TunerState::Gone);
        tracing::info!(
            "plugin tuner '{}' (id {}) unloaded: {why}; its changes stay recorded for rollback",
            l.name,
            l.id
        );
    }

    /// Unloads plugins that disabled themselves (a failing callback), about once a second.
    pub(super) fn reap(&mut self, tuners: &mut [Option<Box<dyn Tuner>>], engine: &mut Engine) {
        let failed: Vec<PathBuf> = self
            .loaded
            .iter()
            .filter(|(_, l)| l.failed.get())
            .map(|(p, _)| p.clone())
            .collect();
        for p in failed {
            if let Some(ident) = self.loaded.get(&p).map(|l| l.ident) {
                // Not reloaded until the file changes.
                self.refused.insert(
                    p.clone(),
                    (Some(ident), "disabled after a failing callback".into()),
                );
            }
            self.unload(&p, tuners, engine, "a callback failed");
        }
    }
}
