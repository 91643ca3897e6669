//! The built-in tuners. Adding a tuner: create its folder `src/tuners/<name>/` (with
//! `<name>.bpf.c`, `mod.rs` exporting `pub fn tuner() -> Box<dyn Tuner>`, and
//! `page.roff` for its man page) and add its name to `tuners!` below. That one word is
//! the whole registration: build.rs reads this invocation to compile
//! `<name>/<name>.bpf.c`, and bpftune-docgen reads it to find `<name>/page.roff`.

/// The build scripts' reader of the `tuners!` list, compiled here to test it.
#[cfg(test)]
#[path = "../../build_registry.rs"]
mod build_registry;

use crate::tuner::Tuner;

/// Declares each tuner's module and generates [`all`] and [`names`] in the order given.
/// Keep the invocation a plain comma-separated list of folder names: build.rs and
/// xtask/build.rs parse it as text (build_registry.rs).
macro_rules! tuners {
    ($($name:ident),+ $(,)?) => {
        $(pub mod $name;)+

        /// The registered folder names, in load order (what build.rs reads); the tests
        /// check they are the tuners' names.
        #[cfg(test)]
        const REGISTERED: &[&str] = &[$(stringify!($name)),+];

        /// Every built-in tuner, in load order (this order gives their ids).
        pub fn all() -> Vec<Box<dyn Tuner>> {
            vec![$($name::tuner()),+]
        }
    };
}

tuners! { sysctl, tcp_buffer, udp_buffer, ip_frag, net_buffer, neigh_table, tcp_conn, vm }

/// Names of the built-in tuners, in load order.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|t| t.name()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// build.rs derives `src/tuners/<name>/<name>.bpf.c` and the skeleton
    /// `<name>.skel.rs` from the folder name, and the docs find `<name>/page.roff` by the
    /// tuner's name: the two must be the same word.
    #[test]
    fn each_tuner_is_named_after_its_folder() {
        assert_eq!(names(), REGISTERED);
    }

    /// The text parse in build_registry.rs sees the same list as the macro.
    #[test]
    fn build_scripts_read_the_registry_the_macro_expands() {
        let parsed = build_registry::parse(include_str!("mod.rs")).expect("tuners! block parses");
        assert_eq!(parsed, REGISTERED);
    }
}
