//! The macros every built-in tuner's glue uses to load its skeleton and describe itself
//! (they name the tuner contract, so they live in this layer, not in `bpf`).

/// Defines a tuner's skeleton loaders: `try_attach_skel` (a throw-away copy with
/// exactly the given programs, loaded and attached then released, for flavour probing)
/// and `load_skel` (the real one; the tuner attaches it).
#[macro_export]
macro_rules! skel_loaders {
    ($builder:ty, $skel:ident) => {
        fn try_attach_skel(
            shared: &$crate::bpf::SharedMaps,
            config: &$crate::bpf::LoadConfig,
            programs: &[&'static str],
        ) -> Result<(), $crate::bpf::HookError> {
            let mut storage = std::mem::MaybeUninit::<libbpf_rs::OpenObject>::uninit();
            let open = $crate::open_skel!(
                $builder,
                &mut storage,
                shared,
                config,
                $crate::bpf::TRIAL_TUNER_ID,
                programs
            );
            let skel = libbpf_rs::skel::OpenSkel::load(open)?;
            let links = $crate::bpf::attach_all(libbpf_rs::skel::Skel::object(&skel))?;
            drop(links);
            Ok(())
        }

        /// The skeleton lives as long as the daemon: its small open-object slot is
        /// leaked on purpose so that the skeleton can be 'static.
        fn load_skel(ctx: &$crate::tuner::StartCtx<'_>) -> Result<$skel<'static>, libbpf_rs::Error> {
            load_skel_with(ctx, ctx.programs)
        }

        /// [`load_skel`] with other programs than the chosen flavours (a tuner that
        /// needs a companion program beside one of them).
        #[allow(dead_code)]
        fn load_skel_with(
            ctx: &$crate::tuner::StartCtx<'_>,
            programs: &[&str],
        ) -> Result<$skel<'static>, libbpf_rs::Error> {
            let storage: &'static mut std::mem::MaybeUninit<libbpf_rs::OpenObject> =
                Box::leak(Box::new(std::mem::MaybeUninit::uninit()));
            let open = $crate::open_skel!(
                $builder,
                storage,
                ctx.shared,
                ctx.config,
                ctx.tuner_id,
                programs
            );
            libbpf_rs::skel::OpenSkel::load(open)
        }

        /// The usual start of a tracing tuner: load for real, attach every
        /// auto-attachable program, and only then lend the shared maps (a tuner that
        /// does not run lends nothing). On error nothing stays attached.
        #[allow(dead_code)]
        fn start_skel(
            ctx: &mut $crate::tuner::StartCtx<'_>,
            tuner: &'static str,
        ) -> Result<($skel<'static>, Vec<libbpf_rs::Link>), $crate::tuner::TunerError> {
            use $crate::tuner::TunerError;
            let skel = load_skel(ctx).map_err(|e| TunerError::load(tuner, e))?;
            let object = libbpf_rs::skel::Skel::object(&skel);
            let links = $crate::bpf::attach_all(object).map_err(|e| TunerError::hook(tuner, e))?;
            ctx.shared
                .adopt(object)
                .map_err(|e| TunerError::load(tuner, e))?;
            Ok((skel, links))
        }
    };
}

/// The descriptor methods every built-in tuner implements the same way: its name, its
/// tunables and scenarios (arrays in the order of its C enums), its hook slots and the
/// probing copy of `skel_loaders!`. Expands inside `impl Tuner for …`, after
/// `skel_loaders!` in the same module.
#[macro_export]
macro_rules! tuner_descriptors {
    ($name:literal, $tunables:expr, $scenarios:expr, $slots:expr) => {
        fn name(&self) -> &'static str {
            $name
        }

        fn tunables(&self) -> &'static [$crate::model::tunable::TunableDesc] {
            $tunables
        }

        fn scenarios(&self) -> &'static [$crate::model::tunable::Scenario] {
            $scenarios
        }

        fn slots(&self) -> &'static [$crate::bpf::Slot] {
            $slots
        }

        fn try_attach(
            &self,
            shared: &$crate::bpf::SharedMaps,
            config: &$crate::bpf::LoadConfig,
            programs: &[&'static str],
        ) -> Result<(), $crate::bpf::HookError> {
            try_attach_skel(shared, config, programs)
        }
    };
}
