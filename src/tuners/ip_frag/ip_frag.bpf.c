// SPDX-License-Identifier: GPL-2.0
/* ip_frag tuner, kernel side. C bpftune watched every fragment with fentry on ip_defrag /
 * ipv6_frag_rcv; without fentry we watch the moment it matters: a fragment is dropped
 * because reassembly memory of its namespace is at ipfrag_high_thresh. inet_frag_find()
 * then refuses to create a queue and ip_defrag()/ipv6_frag_rcv() free the fragment with
 * kfree_skb() — drop reason NOT_SPECIFIED — after counting ReasmFails. Both flavours
 * (tp_btf, raw_tp) wrap one always-inline body. skb:kfree_skb fires for every dropped
 * packet of the host, so the body filters on its arguments first (the drop reason),
 * then checks the packet is a fragment and its namespace's reassembly memory is at the
 * threshold, and only then lets at most one such drop per CPU per 25 ms through
 * (sample_gate: the drops come in bursts) to touch a map. The gate comes last on
 * purpose: gating earlier let any other NOT_SPECIFIED drop (or a fragment dropped for
 * another reason) use up the window, and a short burst of over-threshold drops could
 * then pass unseen (CI saw a namespace with 56 of 100 datagrams lost and no event). */
#include "../../../bpf/common.bpf.h"
#include "ip_frag.h"

#define ETH_P_IP_BE 0x0008   /* htons(0x0800) */
#define ETH_P_IPV6_BE 0xDD86 /* htons(0x86DD) */
#define IP_MF_OFFSET_BE 0xFF3F /* htons(IP_MF | IP_OFFSET) = htons(0x3FFF) */
#define NEXTHDR_FRAGMENT 44

struct bpftune_sample samples[1][BPFTUNE_SAMPLE_CPUS] = {};

/* 0 = not a fragment, 4 = IPv4 fragment, 6 = IPv6 fragment (fragment header right after
 * the fixed header, the usual case). */
static __always_inline int fragment_family(struct sk_buff *skb)
{
	__u16 proto = BPF_CORE_READ(skb, protocol);
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);

	if (proto == ETH_P_IP_BE) {
		struct iphdr iph;

		if (bpf_probe_read_kernel(&iph, sizeof(iph), head + nh))
			return 0;
		return (iph.frag_off & IP_MF_OFFSET_BE) ? 4 : 0;
	}
	if (proto == ETH_P_IPV6_BE) {
		struct ipv6hdr ip6h;

		if (bpf_probe_read_kernel(&ip6h, sizeof(ip6h), head + nh))
			return 0;
		return ip6h.nexthdr == NEXTHDR_FRAGMENT ? 6 : 0;
	}
	return 0;
}

/* `has_reason` is a constant at every call: the no-reason copies (kernels before 5.17,
 * whose kfree_skb has no reason argument and no enum skb_drop_reason) contain no
 * relocation against the enum, so they load where it does not exist. */
static __always_inline int drop_body(struct sk_buff *skb, int reason, bool has_reason)
{
	struct fqdir *fqdir;
	struct net *net;
	long old[1], newv[1], mem, high, low;
	int family, tunable;

	/* Over-threshold fragment drops carry no specific reason (resolved from this
	 * kernel's BTF: the enum's numbering differs between kernels). */
	if (has_reason &&
	    reason != bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NOT_SPECIFIED))
		return 0;
	/* The packet checks (four kernel reads) run for every NOT_SPECIFIED drop: such
	 * drops are rare outside fragment floods (48 in 5 s of loopback iperf3). */
	family = fragment_family(skb);
	if (!family)
		return 0;
	net = BPF_CORE_READ(skb, dev, nd_net.net);
	if (!net)
		return 0;
	if (family == 4) {
		fqdir = BPF_CORE_READ(net, ipv4.fqdir);
		tunable = IP_FRAG_IPFRAG_HIGH_THRESH;
	} else {
		fqdir = BPF_CORE_READ(net, ipv6.fqdir);
		tunable = IP_FRAG_IP6FRAG_HIGH_THRESH;
	}
	if (!fqdir)
		return 0;
	mem = BPF_CORE_READ(fqdir, mem.counter);
	high = BPF_CORE_READ(fqdir, high_thresh);
	low = BPF_CORE_READ(fqdir, low_thresh);
	/* A drop with memory far below the threshold has another cause. */
	if (high <= 0 || !nearly_full(mem, high))
		return 0;
	if (!sample_gate(samples[IP_FRAG_SAMPLE_DROP]))
		return 0;
	old[0] = high;
	newv[0] = grow(high);
	send_sysctl_event(net, IP_FRAG_THRESHOLD_INCREASE, tunable, old, newv, 1, mem, low, 0, 0);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(bpftune_frag_drop_btf, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	return drop_body(skb, reason, true);
}

SEC("raw_tp/kfree_skb")
int BPF_PROG(bpftune_frag_drop_raw, struct sk_buff *skb, void *location, int reason)
{
	return drop_body(skb, reason, true);
}

/* Kernels without drop reasons (5.10–5.16): the tracepoint has two arguments, and the
 * copies above fail to load there (the reason is read past the last argument). Every
 * drop then pays the packet checks (four kernel reads), not only NOT_SPECIFIED ones. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(bpftune_frag_drop_btf_noreason, struct sk_buff *skb, void *location)
{
	return drop_body(skb, 0, false);
}

SEC("raw_tp/kfree_skb")
int BPF_PROG(bpftune_frag_drop_raw_noreason, struct sk_buff *skb, void *location)
{
	return drop_body(skb, 0, false);
}
