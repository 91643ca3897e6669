// SPDX-License-Identifier: GPL-2.0
/* strategy example, kernel side: two programs watching reads of kernel.core_pattern,
 * one per strategy. The daemon attaches only the current strategy's program, so the
 * scenario of the events says which one is attached. */
#include "common.bpf.h"

static __always_inline int report(struct bpf_sysctl *ctx, __u32 scenario)
{
	static const char want[] = "kernel/core_pattern";
	struct bpftune_event *ev;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	char name[sizeof(want)];
	int i;

	if (ctx->write || ctx->file_pos || (__s32)(pid_tgid >> 32) == bpftune_pid)
		return 1;
	if (bpf_sysctl_get_name(ctx, name, sizeof(name), 0) != sizeof(want) - 1)
		return 1;
	for (i = 0; i < sizeof(want); i++) {
		if (name[i] != want[i])
			return 1;
	}
	ev = bpf_ringbuf_reserve(&ring_buffer_map, sizeof(*ev), 0);
	if (!ev)
		return 1;
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->tuner_id = tuner_id;
	ev->scenario_id = scenario;
	ev->pid = pid_tgid >> 32;
	ev->ts_ns = bpf_ktime_get_ns();
	bpf_ringbuf_submit(ev, 0);
	return 1;
}

SEC("cgroup/sysctl")
int strategy_a_read(struct bpf_sysctl *ctx)
{
	return report(ctx, 0);
}

SEC("cgroup/sysctl")
int strategy_b_read(struct bpf_sysctl *ctx)
{
	return report(ctx, 1);
}
