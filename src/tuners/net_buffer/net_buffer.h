/* SPDX-License-Identifier: GPL-2.0 */
/* net_buffer ids shared with src/tuners/net_buffer/mod.rs (build.rs turns these enums
 * into Rust constants: the indices are defined here only). */
#ifndef NET_BUFFER_H
#define NET_BUFFER_H

enum net_buffer_tunable {
	NET_BUFFER_NETDEV_MAX_BACKLOG,
	NET_BUFFER_FLOW_LIMIT_CPU_BITMAP,
	NET_BUFFER_NETDEV_BUDGET,
	NET_BUFFER_NETDEV_BUDGET_USECS,
	NET_BUFFER_HIGH_ORDER_ALLOC_DISABLE,
};

enum net_buffer_scenario {
	NETDEV_MAX_BACKLOG_INCREASE,
	FLOW_LIMIT_CPU_SET,
	NETDEV_BUDGET_INCREASE,
	NETDEV_BUDGET_DECREASE,
	HIGH_ORDER_ALLOC_ENABLE,
};

/* aux[] layout of the backlog-drop event (tunable NET_BUFFER_NETDEV_MAX_BACKLOG):
 *  old[0] = netdev_max_backlog the kernel side knew, new[0] = proposed growth,
 *  aux[0] = CPU that dropped (its flow-limit table is the one consulted: skb_flow_limit()
 *           uses this_cpu's softnet_data), aux[1] = drops counted in the current window. */

#endif
