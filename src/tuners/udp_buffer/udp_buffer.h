/* SPDX-License-Identifier: GPL-2.0 */
/* udp_buffer ids shared with src/tuners/udp_buffer/mod.rs (build.rs turns these enums
 * into Rust constants, so the indices are defined here only). */
#ifndef UDP_BUFFER_H
#define UDP_BUFFER_H

enum udp_buffer_tunable {
	UDP_BUFFER_UDP_MEM,
	UDP_BUFFER_NET_CORE_RMEM_MAX,
	UDP_BUFFER_NET_CORE_RMEM_DEFAULT,
};

enum udp_buffer_scenario {
	UDP_BUFFER_INCREASE,
	UDP_BUFFER_DECREASE,
	UDP_MEM_PRESSURE,
	UDP_MEM_EXHAUSTION,
};

/* Indices into the sample array reported at exit. */
enum udp_buffer_sample {
	UDP_BUFFER_SAMPLE_FAIL_RCV,
	UDP_BUFFER_SAMPLE_EXCEED,
	UDP_BUFFER_SAMPLE_MEM,
};

/* aux[] layout of udp_buffer events:
 *  rmem_max/rmem_default: aux[0] = the socket's sk_rcvbuf, aux[1] = 1 if SO_RCVBUF-locked
 *  udp_mem:               aux[0] = pages allocated, flags = BPFTUNE_F_* */

#endif
