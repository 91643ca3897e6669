/* SPDX-License-Identifier: GPL-2.0 */
/* tcp_buffer ids shared with src/tuners/tcp_buffer/mod.rs (keep in step). */
#ifndef TCP_BUFFER_H
#define TCP_BUFFER_H

enum tcp_buffer_tunable {
	TCP_BUFFER_TCP_WMEM,
	TCP_BUFFER_TCP_RMEM,
	TCP_BUFFER_TCP_MEM,
	TCP_BUFFER_TCP_MODERATE_RCVBUF,
	TCP_BUFFER_TCP_NO_METRICS_SAVE,
	TCP_BUFFER_TCP_NO_SSTHRESH_METRICS_SAVE,
	TCP_BUFFER_NET_CORE_HIGH_ORDER_ALLOC_DISABLE,
	TCP_BUFFER_TCP_SYNCOOKIES,
	TCP_BUFFER_TCP_MAX_SYN_BACKLOG,
	TCP_BUFFER_TCP_MAX_ORPHANS,
};

enum tcp_buffer_scenario {
	TCP_BUFFER_INCREASE,
	TCP_BUFFER_DECREASE,
	TCP_BUFFER_DECREASE_LATENCY,
	TCP_MEM_PRESSURE,
	TCP_MEM_EXHAUSTION,
	TCP_MODERATE_RCVBUF_ENABLE,
	TCP_LOW_MEM_ENTER_ENABLE,
	TCP_LOW_MEM_LEAVE_DISABLE,
	TCP_MAX_SYN_BACKLOG_INCREASE,
	TCP_MAX_SYN_BACKLOG_DECREASE,
	TCP_SYNCOOKIES_ENABLE,
	TCP_SYNCOOKIES_DISABLE,
	TCP_MAX_ORPHANS_INCREASE,
};

/* Indices into the sample array reported at exit. */
enum tcp_buffer_sample {
	TCP_BUFFER_SAMPLE_RCV_SPACE,
	TCP_BUFFER_SAMPLE_SENDMSG,
	TCP_BUFFER_SAMPLE_MEM,
};

/* aux[] layout of tcp_buffer events:
 *  rmem/wmem: aux[0] = srtt (us), aux[1] = socket buffer size (sk_rcvbuf/sk_sndbuf)
 *  tcp_mem:   aux[0] = pages allocated, aux[1] = memory_pressure flag, flags = BPFTUNE_F_*
 *  syn:       aux[0] = request-queue length, aux[1] = listen backlog, aux[2] = syncookies */

#endif
