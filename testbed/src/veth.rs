//! A veth pair joining two namespaces.

use anyhow::{Context, Result};

use crate::cmd;
use crate::names::unique_name;
use crate::netns::Netns;

/// A veth pair with one end in each of two namespaces, addressed and up.
///
/// Deleting either namespace deletes the pair; `Drop` also deletes it
/// explicitly (in the namespace and, in case a move failed, in the root
/// netns), ignoring errors.
#[derive(Debug)]
pub struct VethPair {
    dev_a: String,
    dev_b: String,
    ns_a: String,
    ns_b: String,
    addr_a: String,
    addr_b: String,
}

/// `10.1.2.3/24` → `10.1.2.3`.
pub fn strip_prefix_len(addr: &str) -> &str {
    addr.split('/').next().unwrap_or(addr)
}

impl VethPair {
    /// Create a veth pair in the calling thread's (root) netns with unique
    /// names, move one end into `a` and the other into `b`, assign
    /// `addr_a`/`addr_b` (CIDR, e.g. `10.31.0.1/24`) and bring both up.
    /// Interface names use the prefix `btv`.
    pub fn new(a: &Netns, b: &Netns, addr_a: &str, addr_b: &str) -> Result<VethPair> {
        Self::with_prefix(a, b, addr_a, addr_b, "btv")
    }

    /// Like [`VethPair::new`] with a chosen interface-name prefix (see
    /// [`crate::unique_name`]).
    pub fn with_prefix(a: &Netns, b: &Netns, addr_a: &str, addr_b: &str, prefix: &str) -> Result<VethPair> {
        let dev_a = unique_name(prefix);
        let dev_b = unique_name(prefix);
        cmd::run(
            "ip",
            &["link", "add", &dev_a, "type", "veth", "peer", "name", &dev_b],
        )?;
        let pair = VethPair {
            dev_a,
            dev_b,
            ns_a: a.name().to_string(),
            ns_b: b.name().to_string(),
            addr_a: addr_a.to_string(),
            addr_b: addr_b.to_string(),
        };
        for (dev, ns, addr) in [(&pair.dev_a, a, addr_a), (&pair.dev_b, b, addr_b)] {
            cmd::run("ip", &["link", "set", dev, "netns", ns.name()])?;
            ns.ip(&["addr", "add", addr, "dev", dev])
                .with_context(|| format!("address {addr} on {dev}"))?;
            ns.ip(&["link", "set", dev, "up"])?;
        }
        Ok(pair)
    }

    /// Interface name of the end in namespace `a`.
    pub fn dev_a(&self) -> &str {
        &self.dev_a
    }

    /// Interface name of the end in namespace `b`.
    pub fn dev_b(&self) -> &str {
        &self.dev_b
    }

    /// IPv4 address (without prefix length) of the end in `a`.
    pub fn addr_a(&self) -> &str {
        strip_prefix_len(&self.addr_a)
    }

    /// IPv4 address (without prefix length) of the end in `b`.
    pub fn addr_b(&self) -> &str {
        strip_prefix_len(&self.addr_b)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Normal case: the end in ns_a (deleting one end deletes both). If the
        // namespace is already gone so is the pair and this fails quietly.
        if cmd::run_quiet("ip", &["-n", &self.ns_a, "link", "del", &self.dev_a]) {
            return;
        }
        cmd::run_quiet("ip", &["-n", &self.ns_b, "link", "del", &self.dev_b]);
        // In case a move into a namespace failed, the ends are still here.
        for dev in [&self.dev_a, &self.dev_b] {
            if crate::link_exists(dev) {
                cmd::run_quiet("ip", &["link", "del", dev]);
            }
        }
    }
}
