//! The built-in tuners. Adding a tuner: create its folder and add one line here (and
//! one in build.rs for its BPF object).

pub mod ip_frag;
pub mod neigh_table;
pub mod net_buffer;
pub mod sysctl;
pub mod tcp_buffer;
pub mod tcp_conn;
pub mod udp_buffer;

use crate::tuner::Tuner;

/// Every built-in tuner, in load order (this order gives their ids).
pub fn all() -> Vec<Box<dyn Tuner>> {
    vec![
        Box::new(sysctl::SysctlTuner::new()),
        Box::new(tcp_buffer::TcpBuffer::new()),
        Box::new(udp_buffer::UdpBuffer::new()),
        Box::new(ip_frag::IpFrag::new()),
        Box::new(net_buffer::NetBuffer::new()),
        Box::new(neigh_table::NeighTable::new()),
        Box::new(tcp_conn::TcpConn::new()),
    ]
}

/// Names of the built-in tuners.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|t| t.name()).collect()
}
