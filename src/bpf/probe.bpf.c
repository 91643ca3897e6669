// SPDX-License-Identifier: GPL-2.0
/* Feature probes for `bpftune -S` that no tuner needs yet: sockops and iter/tcp. */
#include "../../bpf/common.bpf.h"

SEC("sockops")
int bpftune_probe_sockops(struct bpf_sock_ops *ops)
{
	return 1;
}

SEC("iter/tcp")
int bpftune_probe_iter_tcp(struct bpf_iter__tcp *ctx)
{
	return 0;
}
