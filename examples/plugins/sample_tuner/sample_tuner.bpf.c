// SPDX-License-Identifier: GPL-2.0
/* sample plugin tuner, kernel side (like C bpftune's sample_tuner): a cgroup/sysctl
 * program at the daemon's cgroup-v2 root sees every sysctl access; it posts an event
 * (on the daemon's shared ring buffer, with the tuner id the daemon wrote into
 * tuner_id) whenever kernel.core_pattern is read by anyone but the daemon. */
#include "common.bpf.h"

SEC("cgroup/sysctl")
int sample_core_pattern_read(struct bpf_sysctl *ctx)
{
	static const char want[] = "kernel/core_pattern";
	struct bpftune_event *ev;
	struct task_struct *task;
	struct net *net;
	__u64 pid_tgid;
	char name[sizeof(want)];
	int i;

	/* One event per read: a reader's later read() calls (to see EOF) start past 0. */
	if (ctx->write || ctx->file_pos)
		return 1;
	pid_tgid = bpf_get_current_pid_tgid();
	if ((__s32)(pid_tgid >> 32) == bpftune_pid)
		return 1;
	/* A longer name is truncated (-E2BIG): not ours. */
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
	/* The reader's network namespace: proposals for namespaced sysctls go there. */
	task = (struct task_struct *)bpf_get_current_task();
	net = BPF_CORE_READ(task, nsproxy, net_ns);
	ev->tuner_id = tuner_id;
	ev->scenario_id = 0;
	ev->netns_cookie = netns_cookie(net);
	ev->netns_ino = netns_ino(net);
	ev->pid = pid_tgid >> 32;
	ev->ts_ns = bpf_ktime_get_ns();
	bpf_get_current_comm(ev->str, 16);
	bpf_ringbuf_submit(ev, 0);
	return 1;
}
