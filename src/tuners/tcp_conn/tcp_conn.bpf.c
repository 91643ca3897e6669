// SPDX-License-Identifier: GPL-2.0
/* tcp_conn tuner, kernel side: one sockops program on bpftune's cgroup-v2 directory.
 *
 * - ESTABLISHED (active or passive): ask for STATE and RETRANS callbacks; work out the
 *   connection's path (gateway for routed destinations, remote address for on-link
 *   ones, per netns) and keep it in socket storage; if user space has learned a choice
 *   table for that path, draw one of its 20 slots and set that congestion control.
 * - RETRANS: once retransmissions exceed 1/64 of segments sent, switch the socket to
 *   BBR (with thin linear timeouts, as C bpftune does), once per socket.
 * - STATE to FIN_WAIT1 / CLOSE_WAIT (or CLOSE after a reset): report the connection's path, algorithm, min RTT
 *   and delivery rate to user space, which does the learning (policy.rs).
 *
 * Observe mode (bpftune_observe, --observe): the same decisions, counted and reported
 * the same way, but no bpf_setsockopt: every socket keeps what it had.
 *
 * No tracing hooks: sockops is a stable cgroup program type, so the same program serves
 * full and legacy (-L) mode. */
#include "../../../bpf/common.bpf.h"
#include <bpf/bpf_endian.h>
#include "tcp_conn.h"

#define SOL_TCP 6
#define TCP_CONGESTION 13
#define TCP_THIN_LINEAR_TIMEOUTS 16
#define AF_INET 2
#define AF_INET6 10
#define RTF_GATEWAY 0x0002
#define CC_NAME_MAX 16
/* C bpftune's DROP_SHIFT: switch when retransmits exceed segs_out / 64 (~1.56 %). */
#define LOSS_SHIFT 6

/* Per-socket state: its path and what we did to it. */
struct conn_state {
	struct tcp_conn_path_key key;
	__u8 chosen;   /* algorithm index + 1 set by the learner; 0 = none */
	__u8 switched; /* the loss switch has been considered (done or not needed) */
	__u8 have_key;
	__u8 reported; /* the connection's end was reported */
	__u8 hands_off; /* the application or the route chose its algorithm */
	__u8 pad[3];
	__u64 established_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct conn_state);
} conn_state_map SEC(".maps");

/* Written by user space: the choice table of every path it has learned enough about. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TCP_CONN_MAX_PATHS);
	__type(key, struct tcp_conn_path_key);
	__type(value, struct tcp_conn_path_choice);
} path_choice_map SEC(".maps");

/* Counters read by user space for the summary (in observe mode: what would have been set). */
__u64 tcp_cong_choices[4] = {};
__u64 tcp_thin_lto_choices = 0;
__u64 tcp_loss_switches = 0;

/* Index of a congestion control name, -1 if it is not one we choose among. */
static __always_inline int cc_index(const char *n)
{
	if (n[0] == 'c' && n[1] == 'u' && n[2] == 'b' && n[3] == 'i' && n[4] == 'c' && !n[5])
		return TCP_CONN_ALG_CUBIC;
	if (n[0] == 'b' && n[1] == 'b' && n[2] == 'r' && !n[3])
		return TCP_CONN_ALG_BBR;
	if (n[0] == 'h' && n[1] == 't' && n[2] == 'c' && n[3] == 'p' && !n[4])
		return TCP_CONN_ALG_HTCP;
	if (n[0] == 'd' && n[1] == 'c' && n[2] == 't' && n[3] == 'c' && n[4] == 'p' && !n[5])
		return TCP_CONN_ALG_DCTCP;
	return -1;
}

static __always_inline int current_cc(struct bpf_sock_ops *ops)
{
	char name[CC_NAME_MAX] = {};

	if (bpf_getsockopt(ops, SOL_TCP, TCP_CONGESTION, name, sizeof(name)))
		return -1;
	return cc_index(name);
}

static __always_inline long set_cc(struct bpf_sock_ops *ops, __u32 alg)
{
	char name[CC_NAME_MAX] = {};

	switch (alg) {
	case TCP_CONN_ALG_CUBIC:
		__builtin_memcpy(name, "cubic", 6);
		break;
	case TCP_CONN_ALG_BBR:
		__builtin_memcpy(name, "bbr", 4);
		break;
	case TCP_CONN_ALG_HTCP:
		__builtin_memcpy(name, "htcp", 5);
		break;
	case TCP_CONN_ALG_DCTCP:
		__builtin_memcpy(name, "dctcp", 6);
		break;
	default:
		return -22;
	}
	return bpf_setsockopt(ops, SOL_TCP, TCP_CONGESTION, name, sizeof(name));
}

static __always_inline void v4_mapped(struct tcp_conn_path_key *key, __u32 addr)
{
	key->addr[10] = 0xff;
	key->addr[11] = 0xff;
	__builtin_memcpy(&key->addr[12], &addr, 4);
}

/* The path of a connection. C bpftune keyed every on-link peer under gateway 0.0.0.0
 * (all of them shared one record); here an on-link peer is a path of its own. */
static __always_inline bool path_key(struct bpf_sock_ops *ops, struct sock *sk,
				     struct tcp_conn_path_key *key)
{
	struct dst_entry *dst = BPF_CORE_READ(sk, sk_dst_cache);
	__u32 family = ops->family;
	__u32 r6[4];

	key->netns_cookie = netns_cookie(sk_net(sk));
	if (family == AF_INET6) {
		r6[0] = ops->remote_ip6[0];
		r6[1] = ops->remote_ip6[1];
		r6[2] = ops->remote_ip6[2];
		r6[3] = ops->remote_ip6[3];
		/* An IPv4 peer of a dual-stack socket: its route is an IPv4 rtable. */
		if (!r6[0] && !r6[1] && r6[2] == bpf_htonl(0xffff))
			family = AF_INET;
	} else {
		r6[3] = ops->remote_ip4;
	}
	if (family == AF_INET) {
		struct rtable *rt = (struct rtable *)dst;

		if (rt && bpf_core_field_exists(rt->rt_gw_family)) {
			__u8 gw_family = BPF_CORE_READ(rt, rt_gw_family);

			if (gw_family == AF_INET) {
				v4_mapped(key, BPF_CORE_READ(rt, rt_gw4));
				key->via_gateway = 1;
				return true;
			}
			if (gw_family == AF_INET6) {
				BPF_CORE_READ_INTO(&key->addr, rt, rt_gw6);
				key->via_gateway = 1;
				return true;
			}
		}
		v4_mapped(key, r6[3]);
		return true;
	}
	if (family != AF_INET6)
		return false;
	if (dst) {
		struct rt6_info *rt6 = (struct rt6_info *)dst;

		if (BPF_CORE_READ(rt6, rt6i_flags) & RTF_GATEWAY) {
			BPF_CORE_READ_INTO(&key->addr, rt6, rt6i_gateway);
			key->via_gateway = 1;
			return true;
		}
	}
	__builtin_memcpy(key->addr, r6, 16);
	return true;
}

static __always_inline void post(struct bpf_sock_ops *ops, struct sock *sk,
				 struct conn_state *st, __u32 kind, int alg)
{
	struct bpftune_event *ev;
	struct net *net = sk_net(sk);
	__u64 interval = ops->rate_interval_us;

	ev = bpf_ringbuf_reserve(&ring_buffer_map, sizeof(*ev), 0);
	if (!ev) {
		count_lost_event();
		return;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->tuner_id = tuner_id;
	ev->scenario_id = TCP_CONN_SPECIFY_CONGESTION_CONTROL;
	ev->tunable_id = TCP_CONN_PERSOCK_CONGESTION_CONTROL;
	ev->flags = kind;
	ev->netns_cookie = netns_cookie(net);
	ev->netns_ino = netns_ino(net);
	/* No pid: sockops callbacks mostly run in softirq context, and kernels before 6.10
	 * do not offer bpf_get_current_pid_tgid to sockops programs (EINVAL on 6.1). */
	ev->ts_ns = bpf_ktime_get_ns();
	if (st && st->have_key) {
		__builtin_memcpy(&ev->old[0], st->key.addr, 16);
		ev->old[2] = st->key.via_gateway;
		ev->aux[2] = st->chosen;
	}
	ev->new[0] = alg;
	ev->new[1] = ops->segs_out;
	ev->new[2] = ops->total_retrans;
	ev->aux[0] = ops->rtt_min;
	/* Delivery rate in bytes/s: the average over the connection's life (bytes acked /
	 * time since established) when known. C used the last rate sample (in bytes/us),
	 * whose maximum over connections favours bursty algorithms over faster ones. */
	if (st && st->established_ns && ev->ts_ns > st->established_ns)
		ev->aux[1] = ops->bytes_acked * 1000000000ULL / (ev->ts_ns - st->established_ns);
	else if (interval)
		ev->aux[1] = (__u64)ops->rate_delivered * ops->mss_cache * 1000000ULL / interval;
	ev->aux[3] = ops->family;
	bpf_ringbuf_submit(ev, 0);
}

/* Did someone else choose this connection's algorithm: the application with
 * setsockopt(TCP_CONGESTION) (inherited by accepted sockets from their listener) or the
 * administrator with a route's `congctl lock`? Then it is theirs (C bpftune overrode it). */
static __always_inline bool chosen_by_others(struct tcp_sock *tp)
{
	struct inet_connection_sock *icsk = (struct inet_connection_sock *)tp;

	return BPF_CORE_READ_BITFIELD_PROBED(icsk, icsk_ca_setsockopt) ||
	       BPF_CORE_READ_BITFIELD_PROBED(icsk, icsk_ca_dst_locked);
}

static __always_inline void established(struct bpf_sock_ops *ops)
{
	struct tcp_conn_path_choice *choice;
	struct bpf_sock *bsk = ops->sk;
	struct conn_state *st;
	struct tcp_sock *tp;
	__u32 slot;
	__u8 alg;

	bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags |
				  BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_RETRANS_CB_FLAG);
	if (!bsk)
		return;
	tp = bpf_skc_to_tcp_sock(bsk);
	if (!tp)
		return;
	st = bpf_sk_storage_get(&conn_state_map, bsk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return;
	if (!path_key(ops, (struct sock *)tp, &st->key))
		return;
	st->have_key = 1;
	st->established_ns = bpf_ktime_get_ns();
	if (chosen_by_others(tp)) {
		st->hands_off = 1;
		bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags & ~BPF_SOCK_OPS_RETRANS_CB_FLAG);
		return;
	}
	choice = bpf_map_lookup_elem(&path_choice_map, &st->key);
	if (!choice)
		return; /* not enough history for this path yet */
	slot = bpf_get_prandom_u32() % TCP_CONN_SLOTS;
	/* clang knows slot < 20 and drops the check; the verifier does not know it. */
	asm volatile("" : "+r"(slot));
	if (slot >= TCP_CONN_SLOTS)
		return;
	alg = choice->alg[slot];
	if (alg >= 4)
		return;
	if (bpftune_observe) {
		/* Count the draw, leave the socket alone. st->chosen stays 0: the connection
		 * runs on its default, and retransmit() must judge it as such. */
		__sync_fetch_and_add(&tcp_cong_choices[alg & 3], 1);
		return;
	}
	if (set_cc(ops, alg) == 0) {
		st->chosen = alg + 1;
		__sync_fetch_and_add(&tcp_cong_choices[alg & 3], 1);
	}
}

static __always_inline bool thin_lto_enabled(struct sock *sk)
{
	struct net *net = sk_net(sk);

	if (bpf_core_field_exists(net->ipv4.sysctl_tcp_thin_linear_timeouts))
		return BPF_CORE_READ(net, ipv4.sysctl_tcp_thin_linear_timeouts) != 0;
	return false;
}

static __always_inline void retransmit(struct bpf_sock_ops *ops)
{
	struct bpf_sock *bsk = ops->sk;
	struct conn_state *st = NULL;
	struct tcp_sock *tp;
	int cur;

	/* C's rule, plus at least two retransmissions: on a short connection one alone
	 * (a tail-loss probe, a spurious timeout on a busy host) already exceeds 1/64. */
	if (ops->total_retrans <= (ops->segs_out >> LOSS_SHIFT) || ops->total_retrans < 2)
		return;
	if (!bsk)
		return;
	tp = bpf_skc_to_tcp_sock(bsk);
	if (!tp)
		return;
	st = bpf_sk_storage_get(&conn_state_map, bsk, 0, 0);
	if (st && (st->switched || st->hands_off))
		return;
	cur = current_cc(ops);
	/* The application may set its algorithm after connecting: the flag is then set
	 * and the algorithm is not the one we chose (our own choice sets the flag too). */
	if (chosen_by_others(tp) && !(st && st->chosen && cur == st->chosen - 1)) {
		if (st)
			st->hands_off = 1;
	} else if (cur != TCP_CONN_ALG_BBR) {
		/* Thin linear timeouts for lossy connections nobody chose an algorithm for,
		 * unless the namespace already has them on (C: the global initial value). */
		if ((!st || !st->chosen) && !thin_lto_enabled((struct sock *)tp)) {
			int one = 1;

			if (bpftune_observe ||
			    !bpf_setsockopt(ops, SOL_TCP, TCP_THIN_LINEAR_TIMEOUTS, &one, sizeof(one)))
				__sync_fetch_and_add(&tcp_thin_lto_choices, 1);
		}
		/* Observe mode: the switch is reported (user space proposes it), not made. */
		if (bpftune_observe || set_cc(ops, TCP_CONN_ALG_BBR) == 0) {
			__sync_fetch_and_add(&tcp_cong_choices[TCP_CONN_ALG_BBR], 1);
			__sync_fetch_and_add(&tcp_loss_switches, 1);
			post(ops, (struct sock *)tp, st, TCP_CONN_EV_LOSS_SWITCH, cur);
		}
	}
	if (st)
		st->switched = 1;
	/* Once per socket: no more retransmit callbacks for it. */
	bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags & ~BPF_SOCK_OPS_RETRANS_CB_FLAG);
}

static __always_inline void closing(struct bpf_sock_ops *ops)
{
	struct bpf_sock *bsk = ops->sk;
	struct conn_state *st;
	struct tcp_sock *tp;

	if (!bsk)
		return;
	st = bpf_sk_storage_get(&conn_state_map, bsk, 0, 0);
	if (!st || !st->have_key || st->reported)
		return;
	tp = bpf_skc_to_tcp_sock(bsk);
	if (!tp)
		return;
	st->reported = 1;
	post(ops, (struct sock *)tp, st, TCP_CONN_EV_CLOSE, current_cc(ops));
}

SEC("sockops")
int bpftune_conn_tuner(struct bpf_sock_ops *ops)
{
	switch (ops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		established(ops);
		break;
	case BPF_SOCK_OPS_RETRANS_CB:
		retransmit(ops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		/* FIN_WAIT1 / CLOSE_WAIT as C bpftune; CLOSE too, for connections that end
		 * with a reset (e.g. closed with unread data), which skip both. */
		if (ops->args[1] == BPF_TCP_FIN_WAIT1 || ops->args[1] == BPF_TCP_CLOSE_WAIT ||
		    ops->args[1] == BPF_TCP_CLOSE)
			closing(ops);
		break;
	default:
		break;
	}
	return 1;
}
