/* SPDX-License-Identifier: GPL-2.0 */
/* Types shared by the BPF programs and the Rust daemon (mirrored in src/model/event.rs and src/bpf/event.rs;
 * a size assertion there keeps both sides in step). */
#ifndef BPFTUNE_H
#define BPFTUNE_H

#define BPFTUNE_MAX_VALUES 3
#define BPFTUNE_STR_MAX 64
#define BPFTUNE_AUX_MAX 4
#define BPFTUNE_MAX_SAMPLES 4

/* One ring-buffer record: what happened (tuner, scenario), where (netns cookie and
 * inode, so user space can find the namespace without scanning), when (ktime, for
 * reaction-time measurements) and what the kernel side proposes. */
struct bpftune_event {
	__u32 tuner_id;
	__u32 scenario_id;
	__u64 netns_cookie;
	__u32 netns_ino;
	__s32 pid;
	__u64 ts_ns;
	__u32 tunable_id;
	__u32 flags;
	__s64 old[BPFTUNE_MAX_VALUES];
	__s64 new[BPFTUNE_MAX_VALUES];
	__u64 aux[BPFTUNE_AUX_MAX];
	char str[BPFTUNE_STR_MAX];
};

/* Adaptive sampling state of one hot program on one CPU (C bpftune's bpftune_sample,
 * made per CPU so the hot path never bounces a shared cache line): one cache line each. */
#define BPFTUNE_SAMPLE_CPUS 64
struct bpftune_sample {
	__u64 count;
	__u64 ts;
	__u64 rate;
	__u64 pad[5];
};

/* event flags */
#define BPFTUNE_F_NEAR_PRESSURE   0x1
#define BPFTUNE_F_NEAR_EXHAUSTION 0x2

#endif
