//! The built-in tuners. Adding a tuner: create its folder and add one line here (and
//! one in build.rs for its BPF object).

pub mod sysctl;
pub mod tcp_buffer;
pub mod tcp_conn;

use crate::core::tuner::Tuner;

/// Every built-in tuner, in load order (this order gives their ids).
pub fn all() -> Vec<Box<dyn Tuner>> {
    vec![
        Box::new(sysctl::SysctlTuner::new()),
        Box::new(tcp_buffer::TcpBuffer::new()),
        Box::new(tcp_conn::TcpConn::new()),
    ]
}

/// Names of the built-in tuners.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|t| t.name()).collect()
}
