/* SPDX-License-Identifier: GPL-2.0 */
/* Helpers shared by every tuner's BPF object: the shared ring buffer, 25 ms event
 * suppression, netns identity, learning-rate arithmetic and adaptive sampling. */
#ifndef BPFTUNE_COMMON_BPF_H
#define BPFTUNE_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "bpftune.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by user space between open and load. */
const volatile __u32 tuner_id = 0;
const volatile __u32 bpftune_shift = 2;     /* 6 - learning rate */
const volatile __s32 bpftune_pid = 0;       /* our tgid: ignore our own writes */
const volatile bool bpftune_debug = false;
/* --observe: the daemon writes nothing, so a program that acts on the kernel itself
 * (a per-connection bpf_setsockopt) decides and reports as usual but does not act. A load-time
 * constant: the verifier prunes the branch it does not take. */
const volatile bool bpftune_observe = false;
/* The kernel has no netns cookies for user space (no SO_NETNS_COOKIE, before 5.14): a
 * namespace is identified by its nsfs inode, so events carry it where the cookie would
 * be. Before 5.12 net->net_cookie is also assigned lazily (0 until asked for), which
 * would make every namespace look like the initial one. */
const volatile bool bpftune_ns_by_ino = false;

/* One ring buffer for all tuners: the first object creates it, the others reuse its fd. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} ring_buffer_map SEC(".maps");

/* Last event time per (tuner, tunable, netns) for 25 ms suppression; shared too. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} last_event_map SEC(".maps");

/* Events lost because the ring buffer was full (reserve failed), one counter per CPU
 * (no shared cache line on the failure path); shared by every object like the ring
 * buffer, summed by user space at scrape time (bpftune_events_lost_total). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost_events_map SEC(".maps");

static __always_inline void count_lost_event(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&lost_events_map, &zero);

	if (n)
		*n += 1;
}

/* Force BTF for the event type so libbpf-cargo emits a Rust mirror we can check against. */
struct bpftune_event _bpftune_event_btf = {};

#define BPFTUNE_RATE_LIMIT_NS (25ULL * 1000 * 1000)

#define bpftune_log(fmt, ...)                                   \
	do {                                                    \
		if (bpftune_debug)                              \
			bpf_printk(fmt, ##__VA_ARGS__);         \
	} while (0)

static __always_inline long delta(long v)
{
	return v > 0 ? v >> bpftune_shift : 0;
}

static __always_inline bool nearly_full(long v, long lim)
{
	return v >= lim || v + delta(lim) >= lim;
}

static __always_inline long grow(long v)
{
	return v + delta(v);
}

static __always_inline __u64 netns_cookie(struct net *net)
{
	if (!net)
		return 0;
	if (bpftune_ns_by_ino)
		return BPF_CORE_READ(net, ns.inum);
	if (bpf_core_field_exists(net->net_cookie))
		return BPF_CORE_READ(net, net_cookie);
	return 0;
}

static __always_inline __u32 netns_ino(struct net *net)
{
	if (!net)
		return 0;
	return BPF_CORE_READ(net, ns.inum);
}

static __always_inline struct net *sk_net(struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net);
}

/* Adaptive sampling (C bpftune #152): only every rate-th call proceeds; if two
 * proceeding calls are < 10 ms apart the rate doubles, otherwise it halves back
 * towards the initial 4. State is per CPU (`per_cpu` has BPFTUNE_SAMPLE_CPUS slots) and
 * rates are powers of two, so the skip path is one increment and one mask. */
#define SAMPLE_MIN_RATE 4
#define SAMPLE_MAX_RATE (1ULL << 20)
static __always_inline bool sample_proceed(struct bpftune_sample *per_cpu)
{
	__u32 cpu = bpf_get_smp_processor_id() & (BPFTUNE_SAMPLE_CPUS - 1);
	struct bpftune_sample *s = &per_cpu[cpu];
	__u64 now, rate = s->rate;

	if (rate < SAMPLE_MIN_RATE)
		rate = SAMPLE_MIN_RATE;
	if (++s->count & (rate - 1))
		return false;
	now = bpf_ktime_get_ns();
	if (now - s->ts < 10ULL * 1000 * 1000) {
		if (rate < SAMPLE_MAX_RATE)
			rate <<= 1;
	} else if (rate > SAMPLE_MIN_RATE) {
		rate >>= 1;
	}
	s->rate = rate;
	s->ts = now;
	return true;
}

/* Time-gated sampling for bursty failure signals (drops): a full queue drops thousands
 * of packets within milliseconds, then nothing for seconds. sample_proceed() keeps the
 * high rate one burst taught it and may skip all of the next burst; here at most one call
 * per CPU per 25 ms (the event suppression window) proceeds, so every burst is seen at
 * its start and the cost per skipped call is one clock read. `count` counts calls and
 * `rate` counts the calls that proceeded (reported as calls / proceeded). */
static __always_inline bool sample_gate(struct bpftune_sample *per_cpu)
{
	__u32 cpu = bpf_get_smp_processor_id() & (BPFTUNE_SAMPLE_CPUS - 1);
	struct bpftune_sample *s = &per_cpu[cpu];
	__u64 now = bpf_ktime_get_ns();

	s->count++;
	if (now - s->ts < BPFTUNE_RATE_LIMIT_NS)
		return false;
	s->ts = now;
	s->rate++;
	return true;
}

/* Post a sysctl-change proposal unless one for the same (tuner, tunable, netns) was
 * posted in the last 25 ms; `str` (kernel memory, may be NULL) goes into the event's
 * text, e.g. a device name. Returns 0 when posted. */
static __always_inline int send_sysctl_event_str(struct net *net, __u32 scenario,
						 __u32 tunable, const long *old,
						 const long *new, int nvals, __u64 aux0,
						 __u64 aux1, __u64 aux2, __u32 flags,
						 const char *str)
{
	struct bpftune_event *ev;
	__u64 cookie = netns_cookie(net);
	__u64 key = cookie ^ ((__u64)tunable << 48) ^ ((__u64)tuner_id << 56);
	__u64 now = bpf_ktime_get_ns();
	__u64 *last;
	int i;

	last = bpf_map_lookup_elem(&last_event_map, &key);
	if (last && now - *last < BPFTUNE_RATE_LIMIT_NS)
		return -11; /* EAGAIN */
	bpf_map_update_elem(&last_event_map, &key, &now, BPF_ANY);

	ev = bpf_ringbuf_reserve(&ring_buffer_map, sizeof(*ev), 0);
	if (!ev) {
		count_lost_event();
		return -12;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->tuner_id = tuner_id;
	ev->scenario_id = scenario;
	ev->netns_cookie = cookie;
	ev->netns_ino = netns_ino(net);
	ev->pid = bpf_get_current_pid_tgid() >> 32;
	ev->ts_ns = now;
	ev->tunable_id = tunable;
	ev->flags = flags;
	for (i = 0; i < BPFTUNE_MAX_VALUES; i++) {
		if (i < nvals) {
			ev->old[i] = old[i];
			ev->new[i] = new[i];
		}
	}
	ev->aux[0] = aux0;
	ev->aux[1] = aux1;
	ev->aux[2] = aux2;
	if (str)
		bpf_probe_read_kernel_str(ev->str, sizeof(ev->str), str);
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

/* send_sysctl_event_str without text. */
static __always_inline int send_sysctl_event(struct net *net, __u32 scenario,
					     __u32 tunable, const long *old,
					     const long *new, int nvals, __u64 aux0,
					     __u64 aux1, __u64 aux2, __u32 flags)
{
	return send_sysctl_event_str(net, scenario, tunable, old, new, nvals, aux0, aux1,
				     aux2, flags, NULL);
}

#endif
