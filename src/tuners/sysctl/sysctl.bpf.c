// SPDX-License-Identifier: GPL-2.0
/* sysctl tuner, kernel side: every sysctl write by any process but us is reported, with
 * the full sysctl name and the writer's netns; the access is always allowed.
 *
 * Where a cgroup/sysctl program may read the current task (6.1 and later do; 5.10
 * refuses to load it: bpf_get_current_task and bpf_get_current_pid_tgid are not
 * offered to cgroup programs there), one program at the cgroup-v2 root does it all
 * (bpftune_sysctl_write). On older kernels the same report comes from a kprobe on
 * __cgroup_bpf_run_filter_sysctl(head, table, write), the function through which the
 * kernel runs cgroup/sysctl programs for every sysctl access (its first three
 * arguments are the same since 5.2). Not fentry: the function has seven arguments and
 * 5.10's BPF trampolines take at most six (an fentry copy loads but does not attach). The kernel calls it only while some cgroup/sysctl program is
 * attached, so user space then also attaches bpftune_sysctl_allow, which allows
 * everything. */
#include "../../../bpf/common.bpf.h"

/* Directories above a sysctl's own name: net/ipv4/neigh/default/gc_thresh1 has 4. */
#define SYSCTL_DEPTH 6

/* The name is assembled here, then copied into the event: writing at a variable offset
 * needs BPFTUNE_STR_MAX bytes of room after any offset below BPFTUNE_STR_MAX. */
struct name_buf {
	char b[2 * BPFTUNE_STR_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct name_buf);
} sysctl_name_scratch SEC(".maps");

/* A zeroed event for a write by `pid_tgid`; NULL for our own writes, or when the ring
 * buffer is full (counted). */
static __always_inline struct bpftune_event *reserve_write(__u64 pid_tgid)
{
	struct bpftune_event *ev;

	if ((__s32)(pid_tgid >> 32) == bpftune_pid)
		return NULL;
	ev = bpf_ringbuf_reserve(&ring_buffer_map, sizeof(*ev), 0);
	if (!ev) {
		count_lost_event();
		return NULL;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	return ev;
}

/* The writer's namespace, pid and comm, then submit. */
static __always_inline void submit_write(struct bpftune_event *ev, __u64 pid_tgid)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct net *net = BPF_CORE_READ(task, nsproxy, net_ns);

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
}

SEC("cgroup/sysctl")
int bpftune_sysctl_write(struct bpf_sysctl *ctx)
{
	struct bpftune_event *ev;
	__u64 pid_tgid;

	if (!ctx->write)
		return 1;
	pid_tgid = bpf_get_current_pid_tgid();
	ev = reserve_write(pid_tgid);
	if (!ev)
		return 1;
	if (bpf_sysctl_get_name(ctx, ev->str, sizeof(ev->str), 0) < 0) {
		/* Truncated names are not ours (ours are all short): ignore. */
		bpf_ringbuf_discard(ev, 0);
		return 1;
	}
	/* Every write is posted: which names are managed is known only in user space (the
	 * tuners' descriptors: net.* and vm.*; a net/-only filter here hid administrators'
	 * vm writes), and sysctl writes are rare (sysctl.d at boot, a container's start). */
	submit_write(ev, pid_tgid);
	return 1;
}

/* Allows every access: attached only with the kprobe below, so that the
 * kernel calls __cgroup_bpf_run_filter_sysctl at all. */
SEC("cgroup/sysctl")
int bpftune_sysctl_allow(struct bpf_sysctl *ctx)
{
	return 1;
}

/* `off` (checked below BPFTUNE_STR_MAX by the caller) masked where the verifier sees it:
 * 5.10's verifier loses the bound that the compiler checked on a copy of the register,
 * and without the barrier the compiler drops the mask as redundant. */
static __always_inline __u32 bounded(__u32 off)
{
	barrier_var(off);
	return off & (BPFTUNE_STR_MAX - 1);
}

/* The name as bpf_sysctl_get_name() writes it ("net/ipv4/tcp_rmem"): the table's own
 * name after those of its directories, which the kernel walks the same way
 * (sysctl_cpy_dir: header.parent up to the root, whose name is empty). 0 when written
 * to `out` (BPFTUNE_STR_MAX bytes), -1 when longer (not one of ours) or unreadable. */
static __always_inline int sysctl_name(struct ctl_table_header *head, const struct ctl_table *table,
				       char *out)
{
	const char *parts[SYSCTL_DEPTH + 1] = {};
	struct ctl_dir *dir;
	struct name_buf *buf;
	__u32 zero = 0, off = 0;
	int n = 0, i;
	long r;

	parts[0] = BPF_CORE_READ(table, procname);
	dir = BPF_CORE_READ(head, parent);
#pragma unroll
	for (i = 1; i <= SYSCTL_DEPTH; i++) {
		const struct ctl_table *t;
		const char *name;
		char c = 0;

		if (!dir)
			break;
		t = BPF_CORE_READ(dir, header.ctl_table);
		name = t ? BPF_CORE_READ(t, procname) : NULL;
		if (!name || bpf_probe_read_kernel(&c, 1, name) || !c)
			break;
		parts[i] = name;
		n = i;
		dir = BPF_CORE_READ(dir, header.parent);
	}
	buf = bpf_map_lookup_elem(&sysctl_name_scratch, &zero);
	if (!buf || !parts[0])
		return -1;
#pragma unroll
	for (i = SYSCTL_DEPTH; i >= 0; i--) {
		if (i > n)
			continue;
		if (off >= BPFTUNE_STR_MAX)
			return -1;
		r = bpf_probe_read_kernel_str(&buf->b[bounded(off)], BPFTUNE_STR_MAX, parts[i]);
		if (r <= 1)
			return -1;
		off += r - 1;
		if (i > 0) {
			if (off >= BPFTUNE_STR_MAX)
				return -1;
			buf->b[bounded(off)] = '/';
			off++;
		}
	}
	if (off >= BPFTUNE_STR_MAX)
		return -1;
	__builtin_memcpy(out, buf->b, BPFTUNE_STR_MAX);
	return 0;
}

static __always_inline int traced_write(struct ctl_table_header *head, const struct ctl_table *table,
					int write)
{
	struct bpftune_event *ev;
	__u64 pid_tgid;

	if (!write)
		return 0;
	pid_tgid = bpf_get_current_pid_tgid();
	ev = reserve_write(pid_tgid);
	if (!ev)
		return 0;
	if (sysctl_name(head, table, ev->str)) {
		bpf_ringbuf_discard(ev, 0);
		return 0;
	}
	submit_write(ev, pid_tgid);
	return 0;
}

SEC("kprobe/__cgroup_bpf_run_filter_sysctl")
int BPF_KPROBE(bpftune_sysctl_write_kprobe, struct ctl_table_header *head, const struct ctl_table *table,
	       int write)
{
	return traced_write(head, table, write);
}
