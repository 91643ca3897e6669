/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * bpftune plugin ABI: an external tuner is a shared object named `<name>_tuner.so`
 * that exports one function, BPFTUNE_PLUGIN_SYMBOL, returning a static descriptor.
 * The daemon loads it from its plugin directories (-l DIR, and the system libdir
 * printed by -P) after trust checks, loads the embedded BPF object (sharing the
 * daemon's ring buffer, with the tuner id the daemon assigns written into the
 * object's `tuner_id` rodata), attaches its programs and calls `event` for every
 * ring-buffer record carrying that id.
 *
 * A plugin never writes a sysctl itself: it proposes values through the host table,
 * and the daemon applies them like a built-in tuner's (stale check, clamps,
 * administrator ownership, change record, rollback, observe mode).
 *
 * Compatibility: the descriptor's abi_version must equal the daemon's
 * BPFTUNE_PLUGIN_ABI_VERSION; any change to a structure below bumps it.
 * Strings and arrays the descriptor points to must stay valid while the plugin is
 * loaded (static storage); the daemon copies what it keeps.
 */
#ifndef BPFTUNE_PLUGIN_H
#define BPFTUNE_PLUGIN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BPFTUNE_PLUGIN_ABI_VERSION 1
/* The one symbol a plugin exports: `const struct bpftune_plugin *bpftune_plugin_v1(void)`. */
#define BPFTUNE_PLUGIN_SYMBOL "bpftune_plugin_v1"

#define BPFTUNE_PLUGIN_MAX_VALUES 3
#define BPFTUNE_PLUGIN_STR_MAX 64

/* bpftune_plugin_tunable.flags */
#define BPFTUNE_TUNABLE_NAMESPACED 0x1 /* per network namespace in the kernel */
#define BPFTUNE_TUNABLE_OPTIONAL 0x2   /* a missing sysctl is not an error */

/* One sysctl the tuner manages. */
struct bpftune_plugin_tunable {
	const char *name;    /* dotted sysctl name, e.g. "kernel.core_pattern" */
	uint32_t num_values; /* 1..3 integers; 0 for a string-valued sysctl */
	uint32_t flags;      /* BPFTUNE_TUNABLE_* */
};

/* Why the tuner acts (reported in summaries and change records). */
struct bpftune_plugin_scenario {
	const char *name;
	const char *description;
};

/* bpftune_plugin_prog.kind */
#define BPFTUNE_PROG_AUTO 0   /* attached by its SEC() name (tracepoints, fentry, kprobes) */
#define BPFTUNE_PROG_CGROUP 1 /* attached to the daemon's cgroup-v2 root (cgroup/sysctl, sockops) */

/* bpftune_plugin_prog.strategy: attached whatever the strategy */
#define BPFTUNE_STRATEGY_ALL 0xffffffffu

/* A program of the embedded BPF object. Programs not listed are not loaded. */
struct bpftune_plugin_prog {
	const char *name;  /* function name in the BPF object */
	uint32_t kind;     /* BPFTUNE_PROG_* */
	uint32_t strategy; /* index into strategies, or BPFTUNE_STRATEGY_ALL */
};

/* What the daemon hands to callbacks. `ctx` is the daemon's and valid for the
 * duration of one callback only. Namespaces are named by the event's cookie and
 * inode; cookie 0 is the initial namespace. */
struct bpftune_host;

/* bpftune_host.log levels */
#define BPFTUNE_LOG_ERR 3
#define BPFTUNE_LOG_WARN 4
#define BPFTUNE_LOG_INFO 6
#define BPFTUNE_LOG_DEBUG 7

/* A proposed sysctl change (see struct bpftune_host.propose). */
struct bpftune_proposal {
	uint32_t tunable;   /* index into tunables */
	uint32_t scenario;  /* index into scenarios */
	uint64_t netns_cookie;
	uint64_t netns_ino;
	uint32_t nvalues;    /* number of values in expect/value */
	uint32_t has_expect; /* non-zero: drop the proposal if the live value differs */
	int64_t expect[BPFTUNE_PLUGIN_MAX_VALUES];
	int64_t value[BPFTUNE_PLUGIN_MAX_VALUES];
	const char *message; /* explanation logged with the change (may be NULL) */
	uint64_t event_ts_ns; /* kernel timestamp of the triggering event, or 0 */
};

/* Outcomes of bpftune_host.propose */
#define BPFTUNE_APPLIED 0
#define BPFTUNE_UNCHANGED 1
#define BPFTUNE_STALE 2
#define BPFTUNE_DISABLED 3
#define BPFTUNE_MISSING 4
#define BPFTUNE_NO_NAMESPACE 5
#define BPFTUNE_FAILED 6

struct bpftune_host {
	uint32_t abi_version; /* BPFTUNE_PLUGIN_ABI_VERSION of the daemon */
	uint32_t size;        /* sizeof(struct bpftune_host) in the daemon */
	void *ctx;
	/* Live integer values of a tunable (in the namespace for namespaced ones):
	 * number of values stored, or a negative errno. */
	int (*read)(void *ctx, uint32_t tunable, uint64_t netns_cookie, uint64_t netns_ino,
		    int64_t *values, uint32_t max_values);
	/* Proposes a change; returns BPFTUNE_APPLIED etc. */
	int (*propose)(void *ctx, const struct bpftune_proposal *proposal);
	/* One line in the daemon's log, prefixed with the tuner's name. */
	void (*log)(void *ctx, int level, const char *msg);
	/* Counts n occurrences of a scenario without a change record. */
	void (*count)(void *ctx, uint32_t tunable, uint32_t scenario, uint64_t netns_cookie,
		      uint64_t n);
};

/* One ring-buffer record of this tuner (same layout as struct bpftune_event in
 * bpf/bpftune.h, with netns_cookie 0 for the initial namespace). */
struct bpftune_plugin_event {
	uint32_t tuner_id;
	uint32_t scenario_id;
	uint64_t netns_cookie;
	uint32_t netns_ino;
	int32_t pid;
	uint64_t ts_ns;
	uint32_t tunable_id;
	uint32_t flags;
	int64_t old[BPFTUNE_PLUGIN_MAX_VALUES];
	int64_t new_[BPFTUNE_PLUGIN_MAX_VALUES];
	uint64_t aux[4];
	char str[BPFTUNE_PLUGIN_STR_MAX];
};

/* A strategy (reference §2.10): a set of programs that implement the tuner one way.
 * Every `timeout_secs` the daemon calls `evaluate` of each strategy (higher score is
 * better; a negative score rules it out) and, if another strategy scores higher than
 * the current one, detaches the current one's programs and attaches the best one's.
 * The first strategy is the initial one. */
struct bpftune_plugin_strategy {
	const char *name;
	const char *description;
	uint32_t timeout_secs;
	uint32_t reserved;
	double (*evaluate)(void *state, const struct bpftune_host *host, uint32_t strategy,
			   uint32_t current);
};

struct bpftune_plugin {
	uint32_t abi_version; /* BPFTUNE_PLUGIN_ABI_VERSION the plugin was built with */
	uint32_t size;        /* sizeof(struct bpftune_plugin) */
	const char *name;     /* tuner name: the file must be <name>_tuner.so */
	const struct bpftune_plugin_tunable *tunables;
	uint32_t num_tunables;
	uint32_t num_scenarios;
	const struct bpftune_plugin_scenario *scenarios;
	const void *bpf_object; /* ELF bytes of the BPF object (may be NULL: no BPF) */
	uint64_t bpf_object_len;
	const struct bpftune_plugin_prog *progs;
	uint32_t num_progs;
	uint32_t num_strategies;
	const struct bpftune_plugin_strategy *strategies;
	/* Called once after the BPF object is attached; *state is handed to the other
	 * callbacks. Non-zero: the plugin is not started. (host->read/propose are not
	 * available here and return an error.) */
	int (*init)(const struct bpftune_host *host, void **state);
	/* Called for every event; non-zero disables the plugin. */
	int (*event)(void *state, const struct bpftune_host *host,
		     const struct bpftune_plugin_event *event);
	/* Called about once a second (may be NULL); non-zero disables the plugin. */
	int (*tick)(void *state, const struct bpftune_host *host);
	/* Called once before unloading, after the BPF programs are detached (may be NULL). */
	void (*fini)(void *state, const struct bpftune_host *host);
};

typedef const struct bpftune_plugin *(*bpftune_plugin_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* BPFTUNE_PLUGIN_H */
