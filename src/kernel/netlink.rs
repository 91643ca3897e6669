//! Neighbour-table thresholds written through rtnetlink, as C bpftune does
//! (`RTM_SETNEIGHTBL` with `NDTA_NAME` and `NDTA_THRESH1..3`), behind the ordinary
//! [`SysctlStore`] so that the engine's stale checks, the administrator's ownership,
//! persisted originals and rollback apply to them like to any sysctl.
//!
//! The thresholds of a table are global (one `arp_cache`, one `ndisc_cache`) and the
//! kernel accepts changes only from the initial namespace; `/proc/sys/net/ipv{4,6}/neigh/
//! default/gc_thresh{1,2,3}` show the same fields, so reads go through the inner store and
//! every write is read back (C bpftune never re-read what it had sent, nor waited for the
//! kernel's answer).

use std::num::NonZeroI32;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
use netlink_packet_route::neighbour_table::{NeighbourTableAttribute, NeighbourTableMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::kernel::sysctl::{SysctlError, SysctlStore, Target};
use crate::model::tunable::SysctlValue;

/// Which neighbour table and threshold a sysctl name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighThresh {
    pub family: AddressFamily,
    /// `arp_cache` or `ndisc_cache`.
    pub table: &'static str,
    /// 1, 2 or 3.
    pub which: u8,
}

/// `net.ipv4.neigh.default.gc_thresh2` → (inet, arp_cache, 2); `None` for anything else.
pub fn neigh_thresh(name: &str) -> Option<NeighThresh> {
    let (family, table, rest) = if let Some(r) = name.strip_prefix("net.ipv4.neigh.default.gc_thresh") {
        (AddressFamily::Inet, "arp_cache", r)
    } else if let Some(r) = name.strip_prefix("net.ipv6.neigh.default.gc_thresh") {
        (AddressFamily::Inet6, "ndisc_cache", r)
    } else {
        return None;
    };
    let which = match rest {
        "1" => 1,
        "2" => 2,
        "3" => 3,
        _ => return None,
    };
    Some(NeighThresh { family, table, which })
}

/// The `RTM_SETNEIGHTBL` request setting one threshold, serialised (with `NLM_F_ACK`:
/// the kernel answers with an error message, code 0 on success).
pub fn setneightbl_request(t: NeighThresh, value: u32, seq: u32) -> Vec<u8> {
    let mut msg = NeighbourTableMessage::default();
    msg.header.family = t.family;
    msg.attributes
        .push(NeighbourTableAttribute::Name(t.table.to_string()));
    msg.attributes.push(match t.which {
        1 => NeighbourTableAttribute::Threshold1(value),
        2 => NeighbourTableAttribute::Threshold2(value),
        _ => NeighbourTableAttribute::Threshold3(value),
    });
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    header.sequence_number = seq;
    let mut nl = NetlinkMessage::new(
        header,
        NetlinkPayload::from(RouteNetlinkMessage::SetNeighbourTable(msg)),
    );
    nl.finalize();
    let mut buf = vec![0u8; nl.buffer_len()];
    nl.serialize(&mut buf);
    buf
}

/// The kernel's answer to a request: `Ok` for an ACK, the errno otherwise.
pub fn parse_ack(buf: &[u8], seq: u32) -> Result<(), std::io::Error> {
    let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(buf)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    if msg.header.sequence_number != seq {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "netlink answer to sequence {} instead of {seq}",
                msg.header.sequence_number
            ),
        ));
    }
    match msg.payload {
        NetlinkPayload::Error(e) => match e.code {
            None => Ok(()),
            Some(code) => Err(std::io::Error::from_raw_os_error(-NonZeroI32::get(code))),
        },
        other => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unexpected netlink answer {other:?}"),
        )),
    }
}

/// Sends one threshold change from the calling thread's network namespace (the daemon's:
/// the initial one) and waits for the kernel's answer.
///
/// The kernel checks CAP_NET_ADMIN of the socket's opener and of the sender: the caller
/// raises it for the whole call (`kernel::sysctl::write_desc` does, from the thresholds'
/// descriptors, `privs::NEIGH_TABLE`), so that the descriptor is the one place that says
/// what the write needs (and the idle-capability root test proves it).
pub fn set_neigh_thresh(t: NeighThresh, value: u32) -> Result<(), std::io::Error> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    let seq = std::process::id() ^ value.rotate_left(8) ^ u32::from(t.which);
    sock.send(&setneightbl_request(t, value, seq), 0)?;
    let (buf, _) = sock.recv_from_full()?;
    parse_ack(&buf, seq)
}

/// A [`SysctlStore`] that writes neighbour-table thresholds of the initial namespace with
/// `RTM_SETNEIGHTBL` and everything else through `inner`.
pub struct NeighTableStore<S> {
    inner: S,
}

impl<S: SysctlStore> NeighTableStore<S> {
    pub fn new(inner: S) -> Self {
        NeighTableStore { inner }
    }
}

impl<S: SysctlStore> SysctlStore for NeighTableStore<S> {
    fn read(
        &self,
        target: &Target,
        name: &str,
        is_string: bool,
        num_values: u8,
    ) -> Result<SysctlValue, SysctlError> {
        self.inner.read(target, name, is_string, num_values)
    }

    fn write(&self, target: &Target, name: &str, value: &SysctlValue) -> Result<(), SysctlError> {
        let (Target::Global, Some(t)) = (target, neigh_thresh(name)) else {
            return self.inner.write(target, name, value);
        };
        let rejected = |why: &str| SysctlError::Rejected {
            name: name.to_string(),
            value: value.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_string()),
        };
        let v = match value.ints() {
            Some(&[v]) => u32::try_from(v).map_err(|_| rejected("out of range"))?,
            _ => return Err(rejected("one integer expected")),
        };
        set_neigh_thresh(t, v).map_err(|e| SysctlError::from_io(name, Some(&value.to_string()), e))?;
        // Read back what the kernel now holds: that, not what we sent, is the new value.
        let now = self.inner.read(target, name, false, 1)?;
        if now != *value {
            return Err(SysctlError::Io {
                name: name.to_string(),
                source: std::io::Error::other(format!("wrote {value} via netlink but the table holds {now}")),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::ErrorMessage;

    #[test]
    fn names_map_to_tables() {
        assert_eq!(
            neigh_thresh("net.ipv4.neigh.default.gc_thresh3"),
            Some(NeighThresh {
                family: AddressFamily::Inet,
                table: "arp_cache",
                which: 3
            })
        );
        assert_eq!(
            neigh_thresh("net.ipv6.neigh.default.gc_thresh1").map(|t| (t.table, t.which)),
            Some(("ndisc_cache", 1))
        );
        assert_eq!(neigh_thresh("net.ipv4.neigh.default.gc_thresh4"), None);
        assert_eq!(neigh_thresh("net.ipv4.neigh.eth0.gc_thresh1"), None);
        assert_eq!(neigh_thresh("net.ipv4.tcp_rmem"), None);
    }

    #[test]
    fn request_is_a_setneightbl_with_name_and_threshold() {
        let t = neigh_thresh("net.ipv4.neigh.default.gc_thresh2").expect("thresh");
        let buf = setneightbl_request(t, 640, 7);
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf).expect("parses back");
        assert_eq!(msg.header.message_type, 67, "RTM_SETNEIGHTBL");
        assert_eq!(msg.header.flags, NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(msg.header.length as usize, buf.len());
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::SetNeighbourTable(m)) = msg.payload else {
            panic!("not a SetNeighbourTable: {:?}", msg.payload);
        };
        assert_eq!(m.header.family, AddressFamily::Inet);
        assert_eq!(
            m.attributes,
            vec![
                NeighbourTableAttribute::Name("arp_cache".into()),
                NeighbourTableAttribute::Threshold2(640)
            ]
        );
    }

    fn answer(seq: u32, code: i32) -> Vec<u8> {
        let mut e = ErrorMessage::default();
        e.code = NonZeroI32::new(code);
        let mut h = NetlinkHeader::default();
        h.sequence_number = seq;
        let mut m = NetlinkMessage::<RouteNetlinkMessage>::new(h, NetlinkPayload::Error(e));
        m.finalize();
        let mut buf = vec![0u8; m.buffer_len()];
        m.serialize(&mut buf);
        buf
    }

    #[test]
    fn acks_and_errors() {
        assert!(parse_ack(&answer(5, 0), 5).is_ok());
        let err = parse_ack(&answer(5, -libc::ENOENT), 5).expect_err("nack");
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        assert!(parse_ack(&answer(6, 0), 5).is_err(), "other sequence");
        assert!(parse_ack(&[1, 2, 3], 5).is_err());
    }
}
