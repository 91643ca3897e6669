// SPDX-License-Identifier: GPL-2.0
/* strategy example, user side: two strategies ("a" and "b"), one BPF program each, with
 * a 1-second timeout. evaluate() scores the strategy that is not running higher, so the
 * daemon alternates between the two programs every second; events tell which program
 * saw a read of kernel.core_pattern. A real tuner would score each strategy by what it
 * costs and what it catches (e.g. attach a hot hook only while a limit is near). Built
 * like the sample (see ../sample_tuner/Makefile). */
#include <stdio.h>
#include <bpftune/plugin.h>

#ifndef BPF_OBJ
#define BPF_OBJ "strategy_tuner.bpf.o"
#endif

__asm__(".pushsection .rodata\n"
	".balign 8\n"
	".hidden strategy_bpf_start\n"
	"strategy_bpf_start:\n"
	".incbin \"" BPF_OBJ "\"\n"
	".hidden strategy_bpf_end\n"
	"strategy_bpf_end:\n"
	".popsection\n");
extern const char strategy_bpf_start[], strategy_bpf_end[];

static const struct bpftune_plugin_tunable tunables[] = {
	{ .name = "kernel.core_pattern", .num_values = 0, .flags = 0 },
};

static const struct bpftune_plugin_scenario scenarios[] = {
	{ .name = "read seen by a", .description = "strategy a's program saw a read" },
	{ .name = "read seen by b", .description = "strategy b's program saw a read" },
};

static const struct bpftune_plugin_prog progs[] = {
	{ .name = "strategy_a_read", .kind = BPFTUNE_PROG_CGROUP, .strategy = 0 },
	{ .name = "strategy_b_read", .kind = BPFTUNE_PROG_CGROUP, .strategy = 1 },
};

static double alternate(void *state, const struct bpftune_host *host, uint32_t strategy,
			uint32_t current)
{
	(void)state;
	(void)host;
	return strategy == current ? 0.0 : 1.0;
}

static const struct bpftune_plugin_strategy strategies[] = {
	{ .name = "a", .description = "program a attached", .timeout_secs = 1,
	  .evaluate = alternate },
	{ .name = "b", .description = "program b attached", .timeout_secs = 1,
	  .evaluate = alternate },
};

static int strategy_event(void *state, const struct bpftune_host *host,
			  const struct bpftune_plugin_event *ev)
{
	char msg[96];

	(void)state;
	snprintf(msg, sizeof(msg), "core_pattern read by pid %d seen by strategy %s",
		 ev->pid, ev->scenario_id ? "b" : "a");
	host->log(host->ctx, BPFTUNE_LOG_INFO, msg);
	return 0;
}

static struct bpftune_plugin plugin = {
	.abi_version = BPFTUNE_PLUGIN_ABI_VERSION,
	.size = sizeof(struct bpftune_plugin),
	.name = "strategy",
	.tunables = tunables,
	.num_tunables = 1,
	.scenarios = scenarios,
	.num_scenarios = 2,
	.progs = progs,
	.num_progs = 2,
	.strategies = strategies,
	.num_strategies = 2,
	.event = strategy_event,
};

const struct bpftune_plugin *bpftune_plugin_v1(void)
{
	plugin.bpf_object = strategy_bpf_start;
	plugin.bpf_object_len = strategy_bpf_end - strategy_bpf_start;
	return &plugin;
}
