// SPDX-License-Identifier: GPL-2.0
/* udp_buffer tuner, kernel side: one hook, udp:udp_fail_queue_rcv_skb, which fires only
 * when a datagram could not be queued to a socket (the kernel counts it in
 * RcvbufErrors or MemErrors at the same place), so the hook costs nothing while UDP
 * works. Both flavours (tp_btf, raw_tp) wrap one always-inline body. A flood of drops
 * can fire it millions of times a second, so at most one drop per CPU per 25 ms
 * proceeds to the UDP memory check and the event (sample_gate). The buffer drops' gate
 * comes after the socket filters on purpose: gating first let the drops of a socket the
 * tuner ignores (SO_RCVBUF set by the application) use up a CPU's window, and a
 * default-sized socket's drops in that window then passed unseen (the bug CI found in
 * ip_frag). The drops that grow no buffer have a gate of their own for the memory check. */
#include "../../../bpf/common.bpf.h"
#include "udp_buffer.h"

#define UDP_BUFFER_MIN 8192L
#define UDP_BUFFER_MAX 268435456L /* 256 MiB */
#define SOCK_RCVBUF_LOCK 2
#define ERR_ENOMEM 12	/* receive buffer (sk_rcvbuf) full */
#define ERR_ENOBUFS 105 /* UDP memory (udp_mem) exhausted */
#define SK_MEM_RECV 1

/* Live copies of the global net.core.rmem_max / rmem_default (there is no stable way to
 * read those kernel variables from BPF): written by user space after load, after every
 * change and once a second, so an administrator's or a rollback's write is seen too. */
__s64 rmem_max = 0;
__s64 rmem_default = 0;

/* Low-memory state seen by the last UDP memory check: no buffer growth while set. */
__u32 udp_mem_flags = 0;

struct bpftune_sample samples[3][BPFTUNE_SAMPLE_CPUS] = {};

/* udp_mem check (analogue of tcp_buffer's tcp_mem check on sk_prot = udp_prot): compare
 * UDP's allocated pages with udp_mem[1]/[2]; post pressure/exhaustion observations.
 * Returns the low-memory flags. */
static __always_inline __u32 udp_mem_check(struct sock *sk)
{
	struct proto *prot = BPF_CORE_READ(sk, __sk_common.skc_prot);
	long *sysctl_mem = BPF_CORE_READ(prot, sysctl_mem);
	atomic_long_t *allocated_p = BPF_CORE_READ(prot, memory_allocated);
	long mem[3] = {}, allocated;
	__u32 flags = 0;
	int scenario = 0;

	if (!sysctl_mem || !allocated_p)
		return 0;
	bpf_probe_read_kernel(mem, sizeof(mem), sysctl_mem);
	allocated = BPF_CORE_READ(allocated_p, counter);
	if (mem[2] <= 0)
		return 0;
	if (nearly_full(allocated, mem[2])) {
		flags = BPFTUNE_F_NEAR_EXHAUSTION | BPFTUNE_F_NEAR_PRESSURE;
		scenario = UDP_MEM_EXHAUSTION;
	} else if (nearly_full(allocated, mem[1])) {
		flags = BPFTUNE_F_NEAR_PRESSURE;
		scenario = UDP_MEM_PRESSURE;
	}
	if (flags) {
		/* The proposal is computed in user space (caps from free memory); the
		 * kernel reports the premise (old) and what it saw. */
		send_sysctl_event(sk_net(sk), scenario, UDP_BUFFER_UDP_MEM, mem, mem, 3,
				  allocated, 0, 0, flags);
	}
	if (flags != udp_mem_flags)
		udp_mem_flags = flags;
	return flags;
}

static __always_inline int fail_rcv_body(int ret, struct sock *sk)
{
	long old[1], newv[1];
	__s64 max = rmem_max, def = rmem_default;
	int rcvbuf, tunable;
	bool locked;

	/* Only the two "no room" failures matter. */
	if (ret != -ERR_ENOMEM && ret != -ERR_ENOBUFS)
		return 0;
	if (!sk)
		return 0;
	if (ret == -ERR_ENOBUFS)
		goto mem_only;
	/* Receive buffer full. Two socket reads decide whether the drop says a limit is too
	 * small; only such drops reach this gate. */
	rcvbuf = BPF_CORE_READ(sk, sk_rcvbuf);
	locked = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_userlocks) & SOCK_RCVBUF_LOCK;
	if (max <= 0 || def <= 0) {
		/* User space has not told us the limits yet (first second after start):
		 * post the observation unfiltered, user space decides on live values. */
		old[0] = 0;
		newv[0] = 0;
		tunable = locked ? UDP_BUFFER_NET_CORE_RMEM_MAX : UDP_BUFFER_NET_CORE_RMEM_DEFAULT;
	} else {
		if (locked) {
			/* The application chose its buffer with SO_RCVBUF (the kernel stores
			 * twice the request, clipped to rmem_max): only a request clipped by
			 * rmem_max says the limit is too small. */
			if (!nearly_full(rcvbuf, 2 * max))
				goto mem_only;
			tunable = UDP_BUFFER_NET_CORE_RMEM_MAX;
			old[0] = max;
		} else {
			/* Default-sized socket: it got rmem_default. Older sockets (created
			 * before an increase) no longer count as evidence. */
			if (!nearly_full(rcvbuf, def))
				goto mem_only;
			tunable = UDP_BUFFER_NET_CORE_RMEM_DEFAULT;
			old[0] = def;
		}
		newv[0] = grow(old[0]);
		if (newv[0] > UDP_BUFFER_MAX || newv[0] < UDP_BUFFER_MIN)
			goto mem_only;
	}
	if (!sample_gate(samples[UDP_BUFFER_SAMPLE_FAIL_RCV]))
		return 0;
	/* No buffer growth while UDP memory is short (the check posts that instead). */
	if (udp_mem_check(sk))
		return 0;
	send_sysctl_event(sk_net(sk), UDP_BUFFER_INCREASE, tunable, old, newv, 1, rcvbuf, locked,
			  0, 0);
	return 0;
mem_only:
	/* A drop that grows no buffer (UDP memory ran out, or a socket the buffer rules
	 * ignore) still says something about UDP memory, as before: it is checked through
	 * a gate of its own, so these drops cannot use up the buffer drops' window. */
	if (sample_gate(samples[UDP_BUFFER_SAMPLE_MEM]))
		udp_mem_check(sk);
	return 0;
}

SEC("tp_btf/udp_fail_queue_rcv_skb")
int BPF_PROG(bpftune_udp_fail_rcv_btf, int ret, struct sock *sk)
{
	return fail_rcv_body(ret, sk);
}

SEC("raw_tp/udp_fail_queue_rcv_skb")
int BPF_PROG(bpftune_udp_fail_rcv_raw, int ret, struct sock *sk)
{
	return fail_rcv_body(ret, sk);
}

/* ---- udp_mem slot (optional). On 6.18 a datagram refused for want of UDP memory is
 * dropped (kfree reason PROTO_MEM) without passing udp_fail_queue_rcv_skb, but
 * sock:sock_exceed_buf_limit fires for it (kind SK_MEM_RECV): C bpftune used the same
 * tracepoint as an optional extra. It fires only when a protocol memory limit is hit. */
static __always_inline int exceed_body(struct sock *sk, int kind)
{
	if (kind != SK_MEM_RECV || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_UDP)
		return 0;
	if (!sample_gate(samples[UDP_BUFFER_SAMPLE_EXCEED]))
		return 0;
	udp_mem_check(sk);
	return 0;
}

SEC("tp_btf/sock_exceed_buf_limit")
int BPF_PROG(bpftune_udp_exceed_btf, struct sock *sk, struct proto *prot, long allocated, int kind)
{
	return exceed_body(sk, kind);
}

SEC("raw_tp/sock_exceed_buf_limit")
int BPF_PROG(bpftune_udp_exceed_raw, struct sock *sk, struct proto *prot, long allocated, int kind)
{
	return exceed_body(sk, kind);
}
