// SPDX-License-Identifier: GPL-2.0
/* vm tuner, kernel side: direct reclaim and kswapd, from the vmscan tracepoints (stable
 * ABI), and high-order fallbacks from kmem:mm_page_alloc_extfrag. Every hook only adds to
 * per-CPU counters; user space sums them once a tick and decides. Direct reclaim is rare
 * and slow by nature (it already costs the allocating task micro- to milliseconds), so
 * timing it costs nothing measurable; extfrag can fire often under fragmentation and
 * does one per-CPU increment.
 *
 * tp_btf first (typed arguments), raw_tp for kernels whose BTF lacks the tracepoint's
 * btf_trace_ type. */
#include "../../../bpf/common.bpf.h"
#include "vm.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vm_reclaim_stats);
} vm_stats SEC(".maps");

/* Start of the direct-reclaim episode a task is in (begin and end run on the task that
 * reclaims, which may migrate between them), and whether kswapd had fallen behind. */
struct reclaim_start {
	__u64 ts;
	__u64 kswapd_behind;
};

/* The kernel's PAGE_ALLOC_COSTLY_ORDER: larger allocations (THP) may reclaim and
 * compact without waking kswapd, a matter of fragmentation, not of the watermarks. */
#define VM_COSTLY_ORDER 3

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct reclaim_start);
} reclaim_starts SEC(".maps");

/* kswapd state per node: 1 between mm_vmscan_kswapd_wake and mm_vmscan_kswapd_sleep. */
__u32 kswapd_awake[VM_MAX_NODES] = {};

static __always_inline struct vm_reclaim_stats *stats(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&vm_stats, &zero);
}

/* A small allocation reaches direct reclaim only after waking kswapd (and finding free
 * memory at the min watermark): kswapd did not keep ahead, whether or not it already ran
 * when the allocation stalled (a burst can outrun kswapd's first wake-up, which is what
 * a larger watermark gap is for). A larger one counts while kswapd was awake. */
static __always_inline int reclaim_begin(int order)
{
	__u32 pid = (__u32)bpf_get_current_pid_tgid();
	__u32 node = (__u32)bpf_get_numa_node_id() & (VM_MAX_NODES - 1);
	struct reclaim_start st = {
		.ts = bpf_ktime_get_ns(),
		.kswapd_behind = order <= VM_COSTLY_ORDER || kswapd_awake[node],
	};

	bpf_map_update_elem(&reclaim_starts, &pid, &st, BPF_ANY);
	return 0;
}

static __always_inline int reclaim_end(void)
{
	__u32 pid = (__u32)bpf_get_current_pid_tgid();
	struct reclaim_start *st = bpf_map_lookup_elem(&reclaim_starts, &pid);
	struct vm_reclaim_stats *s;
	__u64 now = bpf_ktime_get_ns();

	if (!st)
		return 0;
	s = stats();
	if (s) {
		s->direct_stalls++;
		if (now > st->ts)
			s->direct_stall_ns += now - st->ts;
		if (st->kswapd_behind)
			s->stalls_kswapd_behind++;
	}
	bpf_map_delete_elem(&reclaim_starts, &pid);
	return 0;
}

static __always_inline int kswapd_state(int nid, __u32 awake)
{
	__u32 node = (__u32)nid & (VM_MAX_NODES - 1);
	struct vm_reclaim_stats *s;

	kswapd_awake[node] = awake;
	if (awake) {
		s = stats();
		if (s)
			s->kswapd_wakes++;
	}
	return 0;
}

static __always_inline int extfrag(int alloc_order)
{
	struct vm_reclaim_stats *s;

	if (alloc_order <= 0)
		return 0;
	s = stats();
	if (s)
		s->highorder_fallbacks++;
	return 0;
}

SEC("tp_btf/mm_vmscan_direct_reclaim_begin")
int BPF_PROG(bpftune_vm_reclaim_begin_btf, int order, gfp_t gfp_flags)
{
	return reclaim_begin(order);
}

SEC("raw_tp/mm_vmscan_direct_reclaim_begin")
int BPF_PROG(bpftune_vm_reclaim_begin_raw, int order, gfp_t gfp_flags)
{
	return reclaim_begin(order);
}

SEC("tp_btf/mm_vmscan_direct_reclaim_end")
int BPF_PROG(bpftune_vm_reclaim_end_btf, unsigned long nr_reclaimed)
{
	return reclaim_end();
}

SEC("raw_tp/mm_vmscan_direct_reclaim_end")
int BPF_PROG(bpftune_vm_reclaim_end_raw, unsigned long nr_reclaimed)
{
	return reclaim_end();
}

SEC("tp_btf/mm_vmscan_kswapd_wake")
int BPF_PROG(bpftune_vm_kswapd_wake_btf, int nid, int zid, int order)
{
	return kswapd_state(nid, 1);
}

SEC("raw_tp/mm_vmscan_kswapd_wake")
int BPF_PROG(bpftune_vm_kswapd_wake_raw, int nid, int zid, int order)
{
	return kswapd_state(nid, 1);
}

SEC("tp_btf/mm_vmscan_kswapd_sleep")
int BPF_PROG(bpftune_vm_kswapd_sleep_btf, int nid)
{
	return kswapd_state(nid, 0);
}

SEC("raw_tp/mm_vmscan_kswapd_sleep")
int BPF_PROG(bpftune_vm_kswapd_sleep_raw, int nid)
{
	return kswapd_state(nid, 0);
}

SEC("tp_btf/mm_page_alloc_extfrag")
int BPF_PROG(bpftune_vm_extfrag_btf, struct page *page, int alloc_order, int fallback_order,
	     int alloc_migratetype, int fallback_migratetype)
{
	return extfrag(alloc_order);
}

SEC("raw_tp/mm_page_alloc_extfrag")
int BPF_PROG(bpftune_vm_extfrag_raw, struct page *page, int alloc_order, int fallback_order,
	     int alloc_migratetype, int fallback_migratetype)
{
	return extfrag(alloc_order);
}
