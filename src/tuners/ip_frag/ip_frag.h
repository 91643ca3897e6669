/* SPDX-License-Identifier: GPL-2.0 */
/* ip_frag ids shared with src/tuners/ip_frag/mod.rs (build.rs turns these enums into
 * Rust constants, so the indices are defined here only). */
#ifndef IP_FRAG_H
#define IP_FRAG_H

enum ip_frag_tunable {
	IP_FRAG_IPFRAG_HIGH_THRESH,
	IP_FRAG_IP6FRAG_HIGH_THRESH,
	/* Never written: read for the "low < high" bound, and declared so that an
	 * administrator's write of them hands the namespace over. */
	IP_FRAG_IPFRAG_LOW_THRESH,
	IP_FRAG_IP6FRAG_LOW_THRESH,
};

enum ip_frag_scenario {
	IP_FRAG_THRESHOLD_INCREASE,
	IP_FRAG_THRESHOLD_DECREASE,
};

/* Indices into the sample array reported at exit. */
enum ip_frag_sample {
	IP_FRAG_SAMPLE_DROP,
};

/* aux[] layout of ip_frag events: aux[0] = fragment memory in use (fqdir->mem, bytes),
 * aux[1] = fqdir->low_thresh. */

#endif
