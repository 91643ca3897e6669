// SPDX-License-Identifier: GPL-2.0
/* neigh_table tuner, kernel side. neigh:neigh_create fires after every allocation attempt
 * (also a failed one: the table was full), neigh:neigh_cleanup_and_release when an entry
 * goes. Both compare the table's GC-able entry count with gc_thresh3 first and post only
 * near the limit (nearly full), or when a grown table is nearly empty again.
 *
 * neigh_create's `n` is NULL when the table is full; a NULL test on it would be pruned in
 * a tp_btf program (the verifier assumes tp_btf pointers are non-NULL), so the body never
 * looks at `n` and uses the table's counters instead. */
#include "../../../bpf/common.bpf.h"
#include "neigh_table.h"

#define AF_INET_ 2
#define AF_INET6_ 10
/* Floors of gc_thresh3 below which a table is never shrunk (C bpftune's MIN_GC_THRESH3). */
#define MIN_GC_THRESH3 1024

static __always_inline int thresh3_tunable(int family)
{
	if (family == AF_INET_)
		return NEIGH_TABLE_IPV4_NEIGH_DEFAULT_GC_THRESH3;
	if (family == AF_INET6_)
		return NEIGH_TABLE_IPV6_NEIGH_DEFAULT_GC_THRESH3;
	return -1;
}

static __always_inline int table_check(struct neigh_table *tbl, struct net_device *dev,
				       bool created)
{
	long thresh[3], newv[3];
	int family, tunable, gc_entries, entries, ifindex = 0;
	struct net *net = NULL;
	const char *name = NULL;

	if (!tbl)
		return 0;
	family = BPF_CORE_READ(tbl, family);
	tunable = thresh3_tunable(family);
	if (tunable < 0)
		return 0;
	thresh[2] = BPF_CORE_READ(tbl, gc_thresh3);
	gc_entries = BPF_CORE_READ(tbl, gc_entries.counter);
	if (created) {
		if (thresh[2] <= 0 || !nearly_full(gc_entries, thresh[2]))
			return 0;
	} else {
		if (thresh[2] <= MIN_GC_THRESH3 || gc_entries > delta(thresh[2]))
			return 0;
	}
	thresh[0] = BPF_CORE_READ(tbl, gc_thresh1);
	thresh[1] = BPF_CORE_READ(tbl, gc_thresh2);
	entries = BPF_CORE_READ(tbl, entries.counter);
	newv[0] = grow(thresh[0]);
	newv[1] = grow(thresh[1]);
	newv[2] = grow(thresh[2]);
	if (dev) {
		ifindex = BPF_CORE_READ(dev, ifindex);
		net = BPF_CORE_READ(dev, nd_net.net);
		name = dev->name;
	}
	send_sysctl_event_str(net, created ? NEIGH_TABLE_FULL : NEIGH_TABLE_EMPTY, tunable,
			      thresh, newv, 3, ifindex, gc_entries, entries, 0, name);
	return 0;
}

SEC("tp_btf/neigh_create")
int BPF_PROG(bpftune_neigh_create_btf, struct neigh_table *tbl, struct net_device *dev)
{
	return table_check(tbl, dev, true);
}

SEC("raw_tp/neigh_create")
int BPF_PROG(bpftune_neigh_create_raw, struct neigh_table *tbl, struct net_device *dev)
{
	return table_check(tbl, dev, true);
}

SEC("tp_btf/neigh_cleanup_and_release")
int BPF_PROG(bpftune_neigh_release_btf, struct neighbour *n)
{
	return table_check(BPF_CORE_READ(n, tbl), NULL, false);
}

SEC("raw_tp/neigh_cleanup_and_release")
int BPF_PROG(bpftune_neigh_release_raw, struct neighbour *n)
{
	return table_check(BPF_CORE_READ(n, tbl), NULL, false);
}
