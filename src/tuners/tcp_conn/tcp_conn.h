/* SPDX-License-Identifier: GPL-2.0 */
/* tcp_conn ids and map layouts shared by tcp_conn.bpf.c and src/tuners/tcp_conn/mod.rs.
 * build.rs turns the enums into Rust constants; the structs are mirrored byte for byte
 * in mod.rs (size assertions there keep both sides in step). */
#ifndef TCP_CONN_H
#define TCP_CONN_H

enum tcp_conn_tunable {
	TCP_CONN_PERSOCK_CONGESTION_CONTROL,
	TCP_CONN_ALLOWED_CONGESTION_CONTROL,
	TCP_CONN_AVAILABLE_CONGESTION_CONTROL,
	TCP_CONN_CONGESTION_CONTROL,
	TCP_CONN_THIN_LINEAR_TIMEOUTS,
};

enum tcp_conn_scenario {
	TCP_CONN_SPECIFY_CONGESTION_CONTROL,
};

/* Congestion control algorithms, in C bpftune's index order. */
enum tcp_conn_alg {
	TCP_CONN_ALG_CUBIC,
	TCP_CONN_ALG_BBR,
	TCP_CONN_ALG_HTCP,
	TCP_CONN_ALG_DCTCP,
};

/* Ring-buffer event kinds (in bpftune_event.flags). */
enum tcp_conn_event {
	TCP_CONN_EV_CLOSE,       /* a connection ended: its path, algorithm, min RTT, rate */
	TCP_CONN_EV_LOSS_SWITCH, /* a retransmitting connection was switched to BBR */
};

/* Choice slots per path: user space fills one slot with an exploration draw and the
 * others with greedy choices, the kernel picks a slot uniformly: epsilon = 1/20 (5 %). */
#define TCP_CONN_SLOTS 20
#define TCP_CONN_NO_ALG 0xff
/* Paths tracked (LRU, kernel and user space alike). */
#define TCP_CONN_MAX_PATHS 1024

/* A path: the gateway for routed destinations, the remote address for on-link ones,
 * per network namespace. IPv4 addresses are stored v4-mapped (::ffff:a.b.c.d). */
struct tcp_conn_path_key {
	__u64 netns_cookie;
	__u8 addr[16];
	__u32 via_gateway;
	__u32 pad;
};

struct tcp_conn_path_choice {
	__u8 alg[TCP_CONN_SLOTS];
	__u32 generation;
};

/* Event layout (struct bpftune_event):
 *  flags = enum tcp_conn_event, netns_cookie/netns_ino = the socket's namespace
 *  old[0..1] = path address (16 bytes), old[2] = via_gateway
 *  new[0] = algorithm index of the connection (-1 if not one of ours), new[1] = segs_out,
 *  new[2] = total_retrans
 *  aux[0] = min RTT (us), aux[1] = delivery rate (bytes/s), aux[2] = algorithm chosen
 *  for it by the learner + 1 (0 = none), aux[3] = address family */

#endif
