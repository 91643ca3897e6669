/* SPDX-License-Identifier: GPL-2.0 */
/* neigh_table ids shared with src/tuners/neigh_table/mod.rs (build.rs turns these enums
 * into Rust constants: the indices are defined here only). */
#ifndef NEIGH_TABLE_H
#define NEIGH_TABLE_H

enum neigh_table_tunable {
	NEIGH_TABLE_IPV4_NEIGH_DEFAULT_GC_INTERVAL,
	NEIGH_TABLE_IPV4_NEIGH_DEFAULT_GC_STALE_TIME,
	NEIGH_TABLE_IPV4_NEIGH_DEFAULT_GC_THRESH1,
	NEIGH_TABLE_IPV4_NEIGH_DEFAULT_GC_THRESH2,
	NEIGH_TABLE_IPV4_NEIGH_DEFAULT_GC_THRESH3,
	NEIGH_TABLE_IPV6_NEIGH_DEFAULT_GC_INTERVAL,
	NEIGH_TABLE_IPV6_NEIGH_DEFAULT_GC_STALE_TIME,
	NEIGH_TABLE_IPV6_NEIGH_DEFAULT_GC_THRESH1,
	NEIGH_TABLE_IPV6_NEIGH_DEFAULT_GC_THRESH2,
	NEIGH_TABLE_IPV6_NEIGH_DEFAULT_GC_THRESH3,
};

enum neigh_table_scenario {
	NEIGH_TABLE_FULL,
	NEIGH_TABLE_GROWN_EXCESSIVELY,
	NEIGH_TABLE_EMPTY,
};

/* Events carry the tunable id of the table's gc_thresh3 (IPv4 or IPv6), the device name
 * in str and: old[] = gc_thresh1..3 as the kernel saw them, aux[0] = ifindex (0 on
 * removal), aux[1] = gc_entries (the count limited by gc_thresh3), aux[2] = entries. */

#endif
