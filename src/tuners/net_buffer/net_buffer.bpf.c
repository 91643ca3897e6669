// SPDX-License-Identifier: GPL-2.0
/* net_buffer tuner, kernel side: backlog drops. skb:kfree_skb fires for every freed
 * packet, so the body compares the drop reason with SKB_DROP_REASON_CPU_BACKLOG (its
 * number differs between kernels: resolved from this kernel's BTF by CO-RE) before it
 * touches any map or global; everything else returns at once.
 *
 * NAPI time squeezes are not hooked here: user space reads /proc/net/softnet_stat once a
 * second (a per-poll hook such as napi:napi_poll would cost on every poll for a signal
 * that is only acted on once a second). */
#include "../../../bpf/common.bpf.h"
#include "net_buffer.h"

#define DROP_WINDOW_NS (60ULL * 1000 * 1000 * 1000)

/* netdev_max_backlog as user space last read or wrote it (the kernel variable moved into
 * net_hotdata in 6.9 and is no ksym of its own any more). 0 = unknown: do nothing. */
__s64 netdev_max_backlog = 0;

/* Backlog drops counted in the current one-minute window (once per drop; C bpftune
 * counted every drop twice). */
__u64 drop_count = 0;
__u64 drop_window_start = 0;

/* Drops seen in total, for the tests and the debug log. */
__u64 backlog_drops = 0;

static __always_inline int backlog_drop_body(int reason)
{
	__u64 now, start, count;
	long old, newv;
	__u32 cpu;

	if (!bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_CPU_BACKLOG))
		return 0;
	if (reason != bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_CPU_BACKLOG))
		return 0;
	__sync_fetch_and_add(&backlog_drops, 1);
	old = netdev_max_backlog;
	if (old <= 0)
		return 0;
	now = bpf_ktime_get_ns();
	start = drop_window_start;
	if (now - start > DROP_WINDOW_NS) {
		/* A new window; a racing CPU may reset too, which only loses a few counts. */
		drop_window_start = now;
		drop_count = 0;
	}
	count = __sync_fetch_and_add(&drop_count, 1) + 1;
	if (count < (__u64)(old >> 5))
		return 0;
	newv = grow(old);
	if (newv <= old)
		newv = old + 1;
	cpu = bpf_get_smp_processor_id();
	/* Global sysctl: no netns (cookie 0 = the initial namespace). */
	if (!send_sysctl_event(NULL, NETDEV_MAX_BACKLOG_INCREASE, NET_BUFFER_NETDEV_MAX_BACKLOG,
			       &old, &newv, 1, cpu, count, 0, 0))
		bpftune_log("net_buffer: %llu backlog drops, max_backlog %ld\n", count, old);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(bpftune_kfree_skb_btf, struct sk_buff *skb, void *location, int reason)
{
	return backlog_drop_body(reason);
}

SEC("raw_tp/kfree_skb")
int BPF_PROG(bpftune_kfree_skb_raw, struct sk_buff *skb, void *location, int reason)
{
	return backlog_drop_body(reason);
}
