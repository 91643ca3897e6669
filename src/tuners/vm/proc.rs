//! Pure parsers of the /proc files the vm tuner reads once a tick: `vmstat` (counters),
//! `zoneinfo` (free pages and watermarks) and `meminfo` (page cache and slab); and
//! `stat` once, for the number of CPUs.

/// A `/proc/vmstat` counter (`name value` lines).
pub fn field(vmstat: &str, name: &str) -> Option<u64> {
    vmstat.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(name)).then(|| it.next()?.parse().ok())?
    })
}

/// Direct-reclaim entries in all zones (`allocstall_<zone>`; one `allocstall` on kernels
/// before 4.10).
pub fn allocstalls(vmstat: &str) -> u64 {
    vmstat
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let name = it.next()?;
            (name == "allocstall" || name.starts_with("allocstall_")).then(|| it.next()?.parse::<u64>().ok())?
        })
        .sum()
}

/// A `/proc/meminfo` value in KiB (`Name:   123 kB`).
pub fn meminfo_kib(meminfo: &str, name: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// PSI memory pressure: the `some` line's `total=` (µs any task stalled on memory).
pub fn psi_some_total_us(pressure: &str) -> Option<u64> {
    let line = pressure.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix("total="))?
        .parse()
        .ok()
}

/// Online CPUs: the `cpuN` lines of `/proc/stat` (the first line, `cpu`, is their sum).
pub fn cpus(stat: &str) -> u64 {
    stat.lines()
        .filter(|l| l.strip_prefix("cpu").is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit())))
        .count() as u64
}

/// Free pages, high watermarks and managed pages, summed over every zone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Zones {
    pub free: u64,
    pub high: u64,
    pub managed: u64,
}

/// Sums the zones of `/proc/zoneinfo`: each zone has a `pages free N` line and
/// `high N` / `managed N` lines (the per-CPU `high:` of the pagesets is not the
/// watermark and is left out: it has a colon).
pub fn zones(zoneinfo: &str) -> Zones {
    let mut z = Zones::default();
    for l in zoneinfo.lines() {
        let mut it = l.split_whitespace();
        let (Some(a), Some(b)) = (it.next(), it.next()) else {
            continue;
        };
        let n = |s: Option<&str>| s.and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        match (a, b) {
            ("pages", "free") => z.free += n(it.next()),
            ("high", v) => z.high += n(Some(v)),
            ("managed", v) => z.managed += n(Some(v)),
            _ => {}
        }
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONEINFO: &str = "Node 0, zone      DMA
  per-node stats
      nr_inactive_anon 1
  pages free     3840
        boost    0
        min      32
        low      40
        high     48
        spanned  4095
        present  3998
        managed  3840
  pagesets
    cpu: 0
              count: 0
              high:  0
              batch: 1
Node 0, zone    DMA32
  pages free     200000
        min      4000
        low      5000
        high     6000
        managed  500000
    cpu: 0
              high:  378
";

    #[test]
    fn zoneinfo_sums_free_and_watermarks_but_not_pageset_highs() {
        assert_eq!(
            zones(ZONEINFO),
            Zones {
                free: 203840,
                high: 6048,
                managed: 503840
            }
        );
        assert_eq!(zones(""), Zones::default());
    }

    #[test]
    fn vmstat_and_meminfo_fields() {
        let v = "allocstall_dma 0\nallocstall_normal 7\nallocstall_movable 2\ncompact_stall 5\nworkingset_refault_file 123\n";
        assert_eq!(field(v, "compact_stall"), Some(5));
        assert_eq!(field(v, "workingset_refault_file"), Some(123));
        assert_eq!(field(v, "workingset_refault"), None);
        assert_eq!(allocstalls(v), 9);
        assert_eq!(allocstalls("allocstall 4\n"), 4);
        let m = "MemTotal:       24000000 kB\nCached:          1000000 kB\nSReclaimable:     200000 kB\n";
        assert_eq!(meminfo_kib(m, "Cached"), Some(1_000_000));
        assert_eq!(meminfo_kib(m, "SReclaimable"), Some(200_000));
        assert_eq!(meminfo_kib(m, "Swap"), None);
        let psi = "some avg10=1.00 avg60=0.50 avg300=0.10 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=42\n";
        assert_eq!(psi_some_total_us(psi), Some(123456));
        assert_eq!(psi_some_total_us(""), None);
        let stat = "cpu  10 0 5 100 0 0 0 0 0 0\ncpu0 5 0 2 50 0 0 0 0 0 0\ncpu1 5 0 3 50 0 0 0 0 0 0\nintr 1\nctxt 9\n";
        assert_eq!(cpus(stat), 2);
        assert_eq!(cpus(""), 0);
    }
}
