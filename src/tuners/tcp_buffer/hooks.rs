//! The tcp_buffer tuner's hook slots: for each, the candidate programs in order of
//! preference (tracepoints first, stable ABI), as the daemon's plan tries them.

use crate::bpf::{Candidate, Flavour, Slot};

/// Hooks in order of preference, by the rule "stable first, then what exists": the
/// tracepoint (tp_btf, then raw_tp), then the kernel function behind it (fentry, then
/// kprobe) for kernels that lack the tracepoint. A candidate counts only if it loads and
/// attaches; see README.md for which kernel gets which flavour.
pub static SLOTS: &[Slot] = &[
    Slot {
        name: "rmem",
        required: true,
        candidates: &[
            // Fires about once per RTT, only when the receiver wants a larger buffer (6.18+).
            Candidate::new("bpftune_rcvbuf_grow_btf", Flavour::TpBtf, "tcp_rcvbuf_grow"),
            // Older kernels: every receive-space adjustment, sampled.
            Candidate::new("bpftune_rcv_space_btf", Flavour::TpBtf, "tcp_rcv_space_adjust"),
            Candidate::new("bpftune_rcvbuf_grow_raw", Flavour::RawTp, "tcp_rcvbuf_grow"),
            Candidate::new("bpftune_rcv_space_raw", Flavour::RawTp, "tcp_rcv_space_adjust"),
            Candidate::new(
                "bpftune_rcv_space_fentry",
                Flavour::Fentry,
                "tcp_rcv_space_adjust",
            ),
            Candidate::new(
                "bpftune_rcv_space_kprobe",
                Flavour::Kprobe,
                "tcp_rcv_space_adjust",
            ),
        ],
    },
    Slot {
        name: "wmem",
        required: true,
        candidates: &[
            // One hit per sendmsg, sampled (6.13+).
            Candidate::new("bpftune_sendmsg_btf", Flavour::TpBtf, "tcp_sendmsg_locked"),
            Candidate::new("bpftune_sendmsg_raw", Flavour::RawTp, "tcp_sendmsg_locked"),
            // C bpftune's hook: static, inlined on some builds.
            Candidate::new(
                "bpftune_sndbuf_expand_fentry",
                Flavour::Fentry,
                "tcp_sndbuf_expand",
            ),
            // Global, called through sk_prot->sendmsg, so never inlined; sampled.
            Candidate::new("bpftune_tcp_sendmsg_fentry", Flavour::Fentry, "tcp_sendmsg"),
            Candidate::new(
                "bpftune_sndbuf_expand_kprobe",
                Flavour::Kprobe,
                "tcp_sndbuf_expand",
            ),
            Candidate::new("bpftune_tcp_sendmsg_kprobe", Flavour::Kprobe, "tcp_sendmsg"),
        ],
    },
    Slot {
        name: "tcp_mem",
        required: false,
        candidates: &[
            Candidate::new("bpftune_exceed_btf", Flavour::TpBtf, "sock_exceed_buf_limit"),
            Candidate::new("bpftune_exceed_raw", Flavour::RawTp, "sock_exceed_buf_limit"),
            Candidate::new(
                "bpftune_enter_mempress_fentry",
                Flavour::Fentry,
                "tcp_enter_memory_pressure",
            ),
            Candidate::new(
                "bpftune_enter_mempress_kprobe",
                Flavour::Kprobe,
                "tcp_enter_memory_pressure",
            ),
        ],
    },
    Slot {
        // Optional: without it, sockets whose default equals the max are still found
        // once they transfer (rmem/wmem hooks).
        name: "established",
        required: false,
        candidates: &[
            Candidate::new("bpftune_estab_btf", Flavour::TpBtf, "inet_sock_set_state"),
            Candidate::new("bpftune_estab_raw", Flavour::RawTp, "inet_sock_set_state"),
            Candidate::new("bpftune_set_state_fentry", Flavour::Fentry, "tcp_set_state"),
            Candidate::new("bpftune_set_state_kprobe", Flavour::Kprobe, "tcp_set_state"),
        ],
    },
    Slot {
        name: "syn_backlog",
        required: false,
        candidates: &[
            Candidate::new("bpftune_synack_btf", Flavour::TpBtf, "tcp_retransmit_synack"),
            Candidate::new("bpftune_synack_raw", Flavour::RawTp, "tcp_retransmit_synack"),
            Candidate::new(
                "bpftune_syn_flood_fentry",
                Flavour::Fentry,
                "tcp_syn_flood_action",
            ),
            Candidate::new(
                "bpftune_syn_flood_kprobe",
                Flavour::Kprobe,
                "tcp_syn_flood_action",
            ),
        ],
    },
];
