// SPDX-License-Identifier: GPL-2.0
/* sysctl tuner, kernel side: a cgroup/sysctl program at the cgroup-v2 root sees every
 * sysctl access by every process. It reports writes by anyone but us, with the full
 * sysctl name and the writer's netns, and always allows the access. */
#include "../../../bpf/common.bpf.h"

SEC("cgroup/sysctl")
int bpftune_sysctl_write(struct bpf_sysctl *ctx)
{
	struct task_struct *task;
	struct bpftune_event *ev;
	struct net *net;
	__u64 pid_tgid;

	if (!ctx->write)
		return 1;
	pid_tgid = bpf_get_current_pid_tgid();
	if ((__s32)(pid_tgid >> 32) == bpftune_pid)
		return 1;
	ev = bpf_ringbuf_reserve(&ring_buffer_map, sizeof(*ev), 0);
	if (!ev) {
		count_lost_event();
		return 1;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	if (bpf_sysctl_get_name(ctx, ev->str, sizeof(ev->str), 0) < 0) {
		/* Truncated names are not ours (ours are all short): ignore. */
		bpf_ringbuf_discard(ev, 0);
		return 1;
	}
	/* Every write is posted: which names are managed is known only in user space (the
	 * tuners' descriptors: net.* and vm.*; a net/-only filter here hid administrators'
	 * vm writes), and sysctl writes are rare (sysctl.d at boot, a container's start). */
	task = (struct task_struct *)bpf_get_current_task();
	net = BPF_CORE_READ(task, nsproxy, net_ns);
	ev->tuner_id = tuner_id;
	ev->scenario_id = 0;
	ev->netns_cookie = netns_cookie(net);
	ev->netns_ino = netns_ino(net);
	ev->pid = pid_tgid >> 32;
	ev->ts_ns = bpf_ktime_get_ns();
	/* The writer (e.g. sysctl(8)) has often exited before user space reads its
	 * cmdline: keep its comm in aux[2..3] (16 bytes). */
	bpf_get_current_comm(&ev->aux[2], 16);
	bpf_ringbuf_submit(ev, 0);
	return 1;
}
