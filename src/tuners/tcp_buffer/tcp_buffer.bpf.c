// SPDX-License-Identifier: GPL-2.0
/* tcp_buffer tuner, kernel side. Every hook exists in several attach flavours: tracepoint
 * (tp_btf, raw_tp) first, then the kernel function behind it (fentry, kprobe) for kernels
 * that lack the tracepoint. User space enables exactly one flavour per hook slot, the first
 * that loads and attaches. Each flavour is a thin wrapper around one `static
 * __always_inline` body that uses CO-RE reads only (valid in every program type); bodies
 * post rarely: they compare against the limit first and rely on 25 ms suppression and
 * sampling. */
#include "../../../bpf/common.bpf.h"
#include "tcp_buffer.h"

#define SOCK_SNDBUF_LOCK 1
#define SOCK_RCVBUF_LOCK 2
#define TCP_LISTEN_STATE 10

/* Low-memory state seen by the last memory check: no buffer growth while set. */
__u32 tcp_mem_flags = 0;

/* Adaptive sampling state per hot hook, reported at exit. */
struct bpftune_sample samples[3][BPFTUNE_SAMPLE_CPUS] = {};

static __always_inline __u32 srtt_us(struct sock *sk)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;

	return BPF_CORE_READ(tp, srtt_us) >> 3;
}

/* tcp_mem check: compare the protocol's allocated pages with tcp_mem[1]/[2] and post
 * a pressure/exhaustion observation. Returns the low-memory flags. */
static __always_inline __u32 tcp_mem_check(struct sock *sk)
{
	struct proto *prot = BPF_CORE_READ(sk, __sk_common.skc_prot);
	long *sysctl_mem = BPF_CORE_READ(prot, sysctl_mem);
	atomic_long_t *allocated_p = BPF_CORE_READ(prot, memory_allocated);
	unsigned long *pressure_p = BPF_CORE_READ(prot, memory_pressure);
	long mem[3] = {}, allocated = 0;
	unsigned long pressure = 0;
	__u32 flags = 0;
	int scenario = 0;

	if (!sysctl_mem || !allocated_p)
		return 0;
	bpf_probe_read_kernel(mem, sizeof(mem), sysctl_mem);
	allocated = BPF_CORE_READ(allocated_p, counter);
	if (pressure_p)
		bpf_probe_read_kernel(&pressure, sizeof(pressure), pressure_p);
	if (mem[2] <= 0)
		return 0;
	if (nearly_full(allocated, mem[2])) {
		flags = BPFTUNE_F_NEAR_EXHAUSTION | BPFTUNE_F_NEAR_PRESSURE;
		scenario = TCP_MEM_EXHAUSTION;
	} else if (nearly_full(allocated, mem[1]) || pressure) {
		flags = BPFTUNE_F_NEAR_PRESSURE;
		scenario = TCP_MEM_PRESSURE;
	}
	if (flags) {
		long newv[3] = { mem[0], mem[1], grow(mem[2]) };

		/* tcp_mem is global: post against the initial netns key (cookie of this
		 * socket's netns is still reported for attribution). */
		send_sysctl_event(sk_net(sk), scenario, TCP_BUFFER_TCP_MEM, mem, newv, 3,
				  allocated, pressure, 0, flags);
	}
	if (flags != tcp_mem_flags)
		tcp_mem_flags = flags;
	return flags;
}

static __always_inline int rmem_body(struct sock *sk)
{
	struct net *net;
	long rmem[3], newv[3];
	int rcvbuf;
	__u8 locks;

	if (tcp_mem_check(sk))
		return 0;
	locks = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_userlocks);
	if (locks & SOCK_RCVBUF_LOCK)
		return 0;
	net = sk_net(sk);
	rcvbuf = BPF_CORE_READ(sk, sk_rcvbuf);
	rmem[0] = BPF_CORE_READ(net, ipv4.sysctl_tcp_rmem[0]);
	rmem[1] = BPF_CORE_READ(net, ipv4.sysctl_tcp_rmem[1]);
	rmem[2] = BPF_CORE_READ(net, ipv4.sysctl_tcp_rmem[2]);
	if (rmem[2] <= 0 || !nearly_full(rcvbuf, rmem[2]))
		return 0;
	newv[0] = rmem[0];
	newv[1] = rmem[1];
	newv[2] = grow(rmem[2]);
	if (newv[2] >= 2147483647L)
		return 0;
	if (!send_sysctl_event(net, TCP_BUFFER_INCREASE, TCP_BUFFER_TCP_RMEM, rmem, newv, 3,
			       srtt_us(sk), rcvbuf, 0, 0)) {
		bpftune_log("tcp_buffer: rcvbuf %d near rmem max %ld\n", rcvbuf, rmem[2]);
	}
	return 0;
}

static __always_inline int wmem_body(struct sock *sk)
{
	struct net *net;
	long wmem[3], newv[3];
	int sndbuf;
	__u8 locks;

	if (tcp_mem_check(sk))
		return 0;
	locks = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_userlocks);
	if (locks & SOCK_SNDBUF_LOCK)
		return 0;
	net = sk_net(sk);
	sndbuf = BPF_CORE_READ(sk, sk_sndbuf);
	wmem[2] = BPF_CORE_READ(net, ipv4.sysctl_tcp_wmem[2]);
	if (wmem[2] <= 0 || !nearly_full(sndbuf, wmem[2]))
		return 0;
	wmem[0] = BPF_CORE_READ(net, ipv4.sysctl_tcp_wmem[0]);
	wmem[1] = BPF_CORE_READ(net, ipv4.sysctl_tcp_wmem[1]);
	newv[0] = wmem[0];
	newv[1] = wmem[1];
	newv[2] = grow(wmem[2]);
	if (newv[2] >= 2147483647L)
		return 0;
	send_sysctl_event(net, TCP_BUFFER_INCREASE, TCP_BUFFER_TCP_WMEM, wmem, newv, 3,
			  srtt_us(sk), sndbuf, 0, 0);
	return 0;
}

/* A listener retransmits SYN-ACKs: half-open connections are piling up. */
static __always_inline int synack_body(struct sock *sk)
{
	struct inet_connection_sock *icsk = (struct inet_connection_sock *)sk;
	struct net *net;
	long old[3] = {}, newv[3] = {};
	int qlen, backlog, max_syn;
	__u8 cookies;

	if (BPF_CORE_READ(sk, __sk_common.skc_state) != TCP_LISTEN_STATE)
		return 0;
	net = sk_net(sk);
	qlen = BPF_CORE_READ(icsk, icsk_accept_queue.qlen.counter);
	backlog = BPF_CORE_READ(sk, sk_max_ack_backlog);
	max_syn = BPF_CORE_READ(net, ipv4.sysctl_max_syn_backlog);
	cookies = BPF_CORE_READ(net, ipv4.sysctl_tcp_syncookies);
	if (max_syn <= 0)
		return 0;
	if (!nearly_full(qlen, max_syn) && qlen < backlog)
		return 0;
	old[0] = max_syn;
	newv[0] = grow(max_syn);
	send_sysctl_event(net, TCP_MAX_SYN_BACKLOG_INCREASE, TCP_BUFFER_TCP_MAX_SYN_BACKLOG, old,
			  newv, 1, qlen, backlog, cookies, 0);
	return 0;
}

/* ---- rmem slot: tcp_rcvbuf_grow fires about once per RTT when the receiver wants a
 * larger buffer (6.18+); tcp_rcv_space_adjust (tracepoint since 4.x, also a global
 * function) is the older, hotter fallback, sampled. */
SEC("tp_btf/tcp_rcvbuf_grow")
int BPF_PROG(bpftune_rcvbuf_grow_btf, struct sock *sk, int time)
{
	return rmem_body(sk);
}

SEC("raw_tp/tcp_rcvbuf_grow")
int BPF_PROG(bpftune_rcvbuf_grow_raw, struct sock *sk)
{
	return rmem_body(sk);
}

static __always_inline int rcv_space_body(struct sock *sk)
{
	if (!sample_proceed(samples[TCP_BUFFER_SAMPLE_RCV_SPACE]))
		return 0;
	return rmem_body(sk);
}

SEC("tp_btf/tcp_rcv_space_adjust")
int BPF_PROG(bpftune_rcv_space_btf, struct sock *sk)
{
	return rcv_space_body(sk);
}

SEC("raw_tp/tcp_rcv_space_adjust")
int BPF_PROG(bpftune_rcv_space_raw, struct sock *sk)
{
	return rcv_space_body(sk);
}

SEC("fentry/tcp_rcv_space_adjust")
int BPF_PROG(bpftune_rcv_space_fentry, struct sock *sk)
{
	return rcv_space_body(sk);
}

SEC("kprobe/tcp_rcv_space_adjust")
int BPF_KPROBE(bpftune_rcv_space_kprobe, struct sock *sk)
{
	return rcv_space_body(sk);
}

/* ---- wmem slot. tcp:tcp_sendmsg_locked (6.13+) fires once per sendmsg: sampled. Older
 * kernels: tcp_sndbuf_expand, C bpftune's hook (static, so inlined on some builds; rare
 * calls, no sampling), then tcp_sendmsg itself (global, reached through sk_prot->sendmsg,
 * so never inlined; once per sendmsg like the tracepoint: sampled). */
static __always_inline int sendmsg_body(struct sock *sk)
{
	if (!sample_proceed(samples[TCP_BUFFER_SAMPLE_SENDMSG]))
		return 0;
	return wmem_body(sk);
}

SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(bpftune_sendmsg_btf, struct sock *sk)
{
	return sendmsg_body(sk);
}

SEC("raw_tp/tcp_sendmsg_locked")
int BPF_PROG(bpftune_sendmsg_raw, struct sock *sk)
{
	return sendmsg_body(sk);
}

SEC("fentry/tcp_sndbuf_expand")
int BPF_PROG(bpftune_sndbuf_expand_fentry, struct sock *sk)
{
	return wmem_body(sk);
}

SEC("kprobe/tcp_sndbuf_expand")
int BPF_KPROBE(bpftune_sndbuf_expand_kprobe, struct sock *sk)
{
	return wmem_body(sk);
}

SEC("fentry/tcp_sendmsg")
int BPF_PROG(bpftune_tcp_sendmsg_fentry, struct sock *sk)
{
	return sendmsg_body(sk);
}

SEC("kprobe/tcp_sendmsg")
int BPF_KPROBE(bpftune_tcp_sendmsg_kprobe, struct sock *sk)
{
	return sendmsg_body(sk);
}

/* ---- established slot: once per connection, when it reaches TCP_ESTABLISHED (both the
 * active and the passive side). A socket that starts with its buffer within one step of
 * the namespace's max (default == max, or nearly) is limited before it sends or receives
 * a byte, and the growth hooks above may never see it "grow": post the same increase
 * event as they do. The tracepoint fires on every state change of every inet socket, so
 * the new state is checked first, before any other read. */
#define TCP_ESTABLISHED_STATE 1

static __always_inline int established_body(struct sock *sk, int newstate)
{
	if (newstate != TCP_ESTABLISHED_STATE)
		return 0;
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	rmem_body(sk);
	wmem_body(sk);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(bpftune_estab_btf, const struct sock *sk, int oldstate, int newstate)
{
	return established_body((struct sock *)sk, newstate);
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(bpftune_estab_raw, const struct sock *sk, int oldstate, int newstate)
{
	return established_body((struct sock *)sk, newstate);
}

/* Kernels without the tracepoint (it exists since 4.16): the TCP function behind it. */
SEC("fentry/tcp_set_state")
int BPF_PROG(bpftune_set_state_fentry, struct sock *sk, int state)
{
	return established_body(sk, state);
}

SEC("kprobe/tcp_set_state")
int BPF_KPROBE(bpftune_set_state_kprobe, struct sock *sk, int state)
{
	return established_body(sk, state);
}

/* ---- memory slot: a socket hit its protocol's memory limit (tcp_mem exhaustion);
 * kernels without the tracepoint: entering TCP memory pressure. */
static __always_inline int exceed_body(struct sock *sk)
{
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	tcp_mem_check(sk);
	return 0;
}

SEC("tp_btf/sock_exceed_buf_limit")
int BPF_PROG(bpftune_exceed_btf, struct sock *sk)
{
	return exceed_body(sk);
}

SEC("raw_tp/sock_exceed_buf_limit")
int BPF_PROG(bpftune_exceed_raw, struct sock *sk)
{
	return exceed_body(sk);
}

static __always_inline int mempress_body(struct sock *sk)
{
	if (sk)
		tcp_mem_check(sk);
	return 0;
}

SEC("fentry/tcp_enter_memory_pressure")
int BPF_PROG(bpftune_enter_mempress_fentry, struct sock *sk)
{
	return mempress_body(sk);
}

SEC("kprobe/tcp_enter_memory_pressure")
int BPF_KPROBE(bpftune_enter_mempress_kprobe, struct sock *sk)
{
	return mempress_body(sk);
}

/* ---- SYN backlog slot: SYN-ACK retransmits by a listener; kernels without the
 * tracepoint: tcp_syn_flood_action (static, inlined on some builds, e.g. Debian 6.1). */
SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(bpftune_synack_btf, struct sock *sk)
{
	return synack_body(sk);
}

SEC("raw_tp/tcp_retransmit_synack")
int BPF_PROG(bpftune_synack_raw, struct sock *sk)
{
	return synack_body(sk);
}

SEC("fentry/tcp_syn_flood_action")
int BPF_PROG(bpftune_syn_flood_fentry, struct sock *sk)
{
	return synack_body(sk);
}

SEC("kprobe/tcp_syn_flood_action")
int BPF_KPROBE(bpftune_syn_flood_kprobe, struct sock *sk)
{
	return synack_body(sk);
}
