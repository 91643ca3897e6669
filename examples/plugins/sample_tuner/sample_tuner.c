// SPDX-License-Identifier: GPL-2.0
/* sample plugin tuner, user side: the descriptor bpftune reads through the one
 * exported symbol, and the event callback. Build (see Makefile):
 *   clang -O2 -g -target bpf -D__TARGET_ARCH_x86 -I<bpftune>/bpf -I<libbpf headers> \
 *         -c sample_tuner.bpf.c -o sample_tuner.bpf.o
 *   clang -O2 -fPIC -shared -I<bpftune>/include -DBPF_OBJ='"sample_tuner.bpf.o"' \
 *         sample_tuner.c -o sample_tuner.so
 * The BPF object is embedded in the shared object (.incbin), so one file is the tuner.
 * Test switches: -DSAMPLE_ABI=N builds a descriptor with another ABI version,
 * -DSAMPLE_FAIL makes the event callback fail (the daemon then disables the plugin),
 * -DSAMPLE_CRASH makes it dereference NULL (SIGSEGV: the daemon dies, and refuses this
 * file version when it starts again). */
#include <stdio.h>
#include <stdlib.h>
#include <bpftune/plugin.h>

#ifndef BPF_OBJ
#define BPF_OBJ "sample_tuner.bpf.o"
#endif
#ifndef SAMPLE_ABI
#define SAMPLE_ABI BPFTUNE_PLUGIN_ABI_VERSION
#endif

/* The BPF object's bytes, between two hidden symbols of our own .rodata. */
__asm__(".pushsection .rodata\n"
	".balign 8\n"
	".hidden sample_bpf_start\n"
	"sample_bpf_start:\n"
	".incbin \"" BPF_OBJ "\"\n"
	".hidden sample_bpf_end\n"
	"sample_bpf_end:\n"
	".popsection\n");
extern const char sample_bpf_start[], sample_bpf_end[];

static const struct bpftune_plugin_tunable tunables[] = {
	/* string-valued: this sample only watches it, it proposes nothing */
	{ .name = "kernel.core_pattern", .num_values = 0, .flags = 0 },
};

static const struct bpftune_plugin_scenario scenarios[] = {
	{ .name = "core_pattern read", .description = "a process read kernel.core_pattern" },
};

static const struct bpftune_plugin_prog progs[] = {
	{ .name = "sample_core_pattern_read", .kind = BPFTUNE_PROG_CGROUP,
	  .strategy = BPFTUNE_STRATEGY_ALL },
};

struct sample_state {
	unsigned long events;
};

static int sample_init(const struct bpftune_host *host, void **state)
{
	struct sample_state *s = calloc(1, sizeof(*s));

	if (!s)
		return -1;
	*state = s;
	host->log(host->ctx, BPFTUNE_LOG_INFO, "sample tuner initialised");
	return 0;
}

static int sample_event(void *state, const struct bpftune_host *host,
			const struct bpftune_plugin_event *ev)
{
	struct sample_state *s = state;
	char msg[160];

	s->events++;
	snprintf(msg, sizeof(msg), "kernel.core_pattern read by pid %d (%.16s), event #%lu",
		 ev->pid, ev->str, s->events);
	host->log(host->ctx, BPFTUNE_LOG_INFO, msg);
	host->count(host->ctx, 0, 0, ev->netns_cookie, 1);
#ifdef SAMPLE_CRASH
	{
		/* A volatile pointer: the compiler cannot see it is NULL, so the store is
		 * made at run time and faults. */
		int *volatile nowhere = NULL;
		*nowhere = 1;
	}
#endif
#ifdef SAMPLE_FAIL
	return -5;
#else
	return 0;
#endif
}

static void sample_fini(void *state, const struct bpftune_host *host)
{
	char msg[96];

	snprintf(msg, sizeof(msg), "sample tuner finished after %lu event(s)",
		 ((struct sample_state *)state)->events);
	host->log(host->ctx, BPFTUNE_LOG_INFO, msg);
	free(state);
}

static struct bpftune_plugin plugin = {
	.abi_version = SAMPLE_ABI,
	.size = sizeof(struct bpftune_plugin),
	.name = "sample",
	.tunables = tunables,
	.num_tunables = 1,
	.scenarios = scenarios,
	.num_scenarios = 1,
	.progs = progs,
	.num_progs = 1,
	.init = sample_init,
	.event = sample_event,
	.fini = sample_fini,
};

const struct bpftune_plugin *bpftune_plugin_v1(void)
{
	plugin.bpf_object = sample_bpf_start;
	plugin.bpf_object_len = sample_bpf_end - sample_bpf_start;
	return &plugin;
}
