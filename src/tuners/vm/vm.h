/* SPDX-License-Identifier: GPL-2.0 */
/* vm ids shared with src/tuners/vm/mod.rs (build.rs turns these enums into Rust
 * constants, so the indices are defined here only). */
#ifndef VM_H
#define VM_H

enum vm_tunable {
	VM_WATERMARK_SCALE_FACTOR,
	VM_MIN_FREE_KBYTES,
	VM_VFS_CACHE_PRESSURE,
};

enum vm_scenario {
	VM_KSWAPD_BEHIND,
	VM_KSWAPD_CALM,
	VM_ATOMIC_RESERVE_SHORT,
	VM_SLAB_CROWDS_CACHE,
	VM_SLAB_CALM,
	VM_CHANGE_MADE_WORSE,
};

/* Reclaim counters, one slot per CPU (a per-CPU array of one element), summed by user
 * space once a tick: nothing is posted to the ring buffer per reclaim. */
struct vm_reclaim_stats {
	__u64 direct_stalls;
	__u64 direct_stall_ns;
	/* Direct-reclaim episodes in which kswapd had fallen behind: of an order up to
	 * PAGE_ALLOC_COSTLY_ORDER (such an allocation wakes kswapd before it reclaims
	 * itself, so kswapd was asked and still did not keep free memory above the min
	 * watermark), or of any order begun while kswapd of the node was awake. */
	__u64 stalls_kswapd_behind;
	/* mm_page_alloc_extfrag with alloc_order > 0. */
	__u64 highorder_fallbacks;
	__u64 kswapd_wakes;
};

/* Nodes tracked for "kswapd awake" (more are folded onto these). */
#define VM_MAX_NODES 64

#endif
