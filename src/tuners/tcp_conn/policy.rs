//! tcp_conn decisions, pure: per-path reinforcement learning over the congestion control
//! algorithms (C bpftune's `tcp_conn_tuner.bpf.c`, moved to user space so that it can be
//! tested), and the ε-greedy choice table the kernel side draws from.
//!
//! * A path's cost for one connection is its relative RTT inflation plus the relative
//!   delivery-rate deficit of the algorithm it used, both × 10^6 ([`cost`]).
//! * Each algorithm's value moves towards the cost by 1/2^shift of the gap
//!   ([`rl_update`], shift from the learning rate `-r`).
//! * Once a path has [`MIN_INSTANCES`] connections, new connections use the algorithm
//!   of lowest value (ties broken at random; untried algorithms have value 0 and so are
//!   tried first), except 1 in [`SLOTS`] (5 %) which picks uniformly among all
//!   algorithms the kernel offers ([`choice_table`]).

/// Number of algorithms (cubic, bbr, htcp, dctcp: `enum tcp_conn_alg`).
pub const ALG_COUNT: usize = 4;
/// Algorithm names in `enum tcp_conn_alg` order (C bpftune's `congs[]`).
pub const ALGS: [&str; ALG_COUNT] = ["cubic", "bbr", "htcp", "dctcp"];
/// Index of BBR, the algorithm lossy connections are switched to.
pub const BBR: usize = 1;
/// Slots of a choice table (`TCP_CONN_SLOTS`): one explores, so ε = 1/20 = 5 % (C's
/// `epsilon_greedy(..., 20)`).
pub const SLOTS: usize = 20;
/// Marks an empty slot (`TCP_CONN_NO_ALG`).
pub const NO_ALG: u8 = 0xff;
/// Connections a path needs before it is steered (C's `REMOTE_HOST_MIN_INSTANCES`).
pub const MIN_INSTANCES: u64 = 4;
/// Scale of the cost terms.
const SCALE: u128 = 1_000_000;

/// `V ← V + (G − V) / 2^shift`; a value of 0 (never measured) takes the gain directly.
pub fn rl_update(value: u64, gain: u64, shift: u32) -> u64 {
    if value == 0 {
        return gain;
    }
    if gain >= value {
        value + ((gain - value) >> shift)
    } else {
        value - ((value - gain) >> shift)
    }
}

/// Cost of one connection: `(conn_min_rtt − path_min_rtt)·10^6 / path_min_rtt +
/// (path_max_rate − alg_max_rate)·10^6 / path_max_rate`. The rate term uses the
/// algorithm's best rate on this path, not the connection's (C bpftune PR #139: a
/// single connection's last rate sample is too noisy). Unknown quantities (0) add 0.
pub fn cost(conn_min_rtt: u64, path_min_rtt: u64, path_max_rate: u64, alg_max_rate: u64) -> u64 {
    let rtt = if path_min_rtt > 0 && conn_min_rtt > path_min_rtt {
        u128::from(conn_min_rtt - path_min_rtt) * SCALE / u128::from(path_min_rtt)
    } else {
        0
    };
    let rate = if path_max_rate > alg_max_rate {
        u128::from(path_max_rate - alg_max_rate) * SCALE / u128::from(path_max_rate)
    } else {
        0
    };
    u64::try_from(rtt + rate).unwrap_or(u64::MAX)
}

/// What one algorithm has achieved on one path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AlgStats {
    /// Learned cost (lower is better; 0 = not measured yet).
    pub metric: u64,
    /// Connections measured.
    pub count: u64,
    /// Of which the algorithm was the greedy (lowest-cost) choice at the time.
    pub greedy: u64,
    /// Lowest min RTT seen, µs (0 = none).
    pub min_rtt_us: u64,
    /// Highest delivery rate seen, bytes/s.
    pub max_rate: u64,
}

/// The learning state of one path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathStats {
    /// Connections that ended on this path.
    pub instances: u64,
    /// Lowest min RTT of any connection, µs (0 = none).
    pub min_rtt_us: u64,
    /// Highest delivery rate of any connection, bytes/s.
    pub max_rate: u64,
    pub algs: [AlgStats; ALG_COUNT],
}

/// One finished connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// Algorithm the connection ended with (`None`: one we do not choose among).
    pub alg: Option<usize>,
    pub min_rtt_us: u64,
    /// Delivery rate, bytes/s.
    pub rate: u64,
}

impl PathStats {
    /// Learns from a finished connection; returns its cost when it was one of our
    /// algorithms. `available`: the algorithms it competes with for "greedy" (C compared
    /// all four, so where htcp/dctcp are missing nothing was ever counted greedy).
    pub fn observe(&mut self, o: Observation, shift: u32, available: &[usize]) -> Option<u64> {
        self.instances += 1;
        if o.min_rtt_us > 0 && (self.min_rtt_us == 0 || o.min_rtt_us < self.min_rtt_us) {
            self.min_rtt_us = o.min_rtt_us;
        }
        self.max_rate = self.max_rate.max(o.rate);
        let alg = o.alg.filter(|&a| a < ALG_COUNT)?;
        // Greedy: no other algorithm had a lower value before this update.
        let before = self.algs[alg].metric;
        let greedy = available
            .iter()
            .all(|&i| i == alg || self.algs.get(i).is_none_or(|a| a.metric >= before));
        let m = &mut self.algs[alg];
        if o.min_rtt_us > 0 && (m.min_rtt_us == 0 || o.min_rtt_us < m.min_rtt_us) {
            m.min_rtt_us = o.min_rtt_us;
        }
        m.max_rate = m.max_rate.max(o.rate);
        let c = cost(o.min_rtt_us, self.min_rtt_us, self.max_rate, m.max_rate);
        m.metric = rl_update(m.metric, c, shift);
        m.count += 1;
        if greedy {
            m.greedy += 1;
        }
        Some(c)
    }

    /// Enough history to steer new connections.
    pub fn ready(&self) -> bool {
        self.instances >= MIN_INSTANCES
    }

    /// The available algorithms of lowest learned value, in index order.
    pub fn greedy_set(&self, available: &[usize]) -> Vec<usize> {
        let min = available
            .iter()
            .filter_map(|&a| self.algs.get(a).map(|s| s.metric))
            .min();
        available
            .iter()
            .copied()
            .filter(|&a| self.algs.get(a).map(|s| s.metric) == min && min.is_some())
            .collect()
    }
}

/// C bpftune's `epsilon_greedy`: with probability 1/`epsilon` (when `draw %
/// epsilon == 0`) a uniformly random available algorithm (`pick`, which may coincide
/// with the greedy one), otherwise one of the greedy set (`pick` breaks ties).
pub fn epsilon_greedy(
    greedy: &[usize],
    available: &[usize],
    epsilon: u32,
    draw: u32,
    pick: u32,
) -> Option<usize> {
    let from = if epsilon > 0 && draw % epsilon == 0 {
        available
    } else {
        greedy
    };
    if from.is_empty() {
        return None;
    }
    from.get(pick as usize % from.len()).copied()
}

/// The table the kernel draws a slot from, uniformly, for every new connection on the
/// path: exactly one slot (at a random position) is an exploration draw, the others are
/// greedy choices with ties broken at random, so each connection explores with
/// probability exactly 1/[`SLOTS`] and otherwise follows the learner. `None` when the
/// path has too little history or nothing is available.
pub fn choice_table(
    path: &PathStats,
    available: &[usize],
    rand: &mut dyn FnMut() -> u32,
) -> Option<[u8; SLOTS]> {
    if !path.ready() || available.is_empty() {
        return None;
    }
    let greedy = path.greedy_set(available);
    let explore_slot = rand() as usize % SLOTS;
    let mut table = [NO_ALG; SLOTS];
    for (i, slot) in table.iter_mut().enumerate() {
        // draw 0 forces the exploration branch, 1 the greedy one.
        let draw = u32::from(i != explore_slot);
        let alg = epsilon_greedy(&greedy, available, 2, draw, rand())?;
        *slot = u8::try_from(alg).ok()?;
    }
    Some(table)
}

/// Observe mode: the algorithms new connections on the path would get (the greedy set,
/// ties drawn at random) instead of `current`, the one its connections run on. `None`
/// while the path is not steered yet ([`choice_table`] gives no table either) or when
/// the learner would keep `current`.
pub fn proposed_choice(path: &PathStats, available: &[usize], current: Option<usize>) -> Option<Vec<usize>> {
    if !path.ready() {
        return None;
    }
    let greedy = path.greedy_set(available);
    (!greedy.is_empty() && greedy != current.into_iter().collect::<Vec<_>>()).then_some(greedy)
}

/// Indices of the algorithms listed in `tcp_available_congestion_control`.
pub fn available(list: &str) -> Vec<usize> {
    let offered: Vec<&str> = list.split_whitespace().collect();
    (0..ALG_COUNT).filter(|&i| offered.contains(&ALGS[i])).collect()
}

/// `tcp_allowed_congestion_control` with every available algorithm of ours it lacks
/// added. C bpftune appends all four (a name the kernel lacks makes the write fail);
/// here the list is built in the kernel's own order (`available`'s, which is how it
/// reads back), so that the value written is the value read: the engine's stale and
/// rollback checks compare them. `None` when nothing is missing or the result would not
/// fit a sysctl string (127 chars).
pub fn allowed_update(allowed: &str, available: &str) -> Option<String> {
    let have: Vec<&str> = allowed.split_whitespace().collect();
    let offered: Vec<&str> = available.split_whitespace().collect();
    let ours = |a: &str| ALGS.contains(&a);
    if !offered.iter().any(|a| ours(a) && !have.contains(a)) {
        return None;
    }
    let mut out: Vec<&str> = offered
        .iter()
        .copied()
        .filter(|a| have.contains(a) || ours(a))
        .collect();
    // Anything allowed but not offered (cannot happen in the kernel) is kept, last.
    out.extend(have.iter().copied().filter(|a| !offered.contains(a)));
    let out = out.join(" ");
    (out.len() <= 127).then_some(out)
}

/// Index of a congestion control name.
pub fn alg_index(name: &str) -> Option<usize> {
    ALGS.iter().position(|a| *a == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rl_update_moves_a_quarter_of_the_gap_at_default_rate() {
        assert_eq!(rl_update(0, 800, 2), 800, "unmeasured takes the gain");
        assert_eq!(rl_update(1000, 2000, 2), 1250);
        assert_eq!(rl_update(2000, 1000, 2), 1750);
        assert_eq!(rl_update(1000, 2000, 6), 1015, "rate 0: 1/64 of the gap");
        assert_eq!(rl_update(1000, 1000, 2), 1000);
    }

    #[test]
    fn cost_is_relative_rtt_inflation_plus_rate_deficit() {
        // RTT 50 ms on a 40 ms path: +25 %; rate 24 of 1535 Mbit/s: 98.4 % deficit.
        assert_eq!(cost(50_000, 40_000, 1535, 1535), 250_000);
        assert_eq!(cost(40_000, 40_000, 1535, 24), 984_364);
        assert_eq!(cost(50_000, 40_000, 1535, 24), 1_234_364);
        // Best on both counts: zero cost. Unknowns add nothing.
        assert_eq!(cost(40_000, 40_000, 1000, 1000), 0);
        assert_eq!(cost(30_000, 40_000, 1000, 2000), 0);
        assert_eq!(cost(0, 0, 0, 0), 0);
        assert_eq!(cost(u64::MAX, 1, u64::MAX, 0), u64::MAX, "saturates");
    }

    fn conn(alg: usize, rtt: u64, rate: u64) -> Observation {
        Observation {
            alg: Some(alg),
            min_rtt_us: rtt,
            rate,
        }
    }

    #[test]
    fn a_lossy_path_learns_bbr() {
        // 1 % loss, 40 ms: cubic ~24 Mbit/s, bbr ~1500 Mbit/s (bytes/s below).
        let (cubic, bbr) = (3_000_000, 190_000_000);
        let mut p = PathStats::default();
        let avail = [0, 1];
        assert_eq!(
            p.observe(conn(0, 40_000, cubic), 2, &[0, 1]),
            Some(0),
            "first: best so far"
        );
        p.observe(conn(1, 40_100, bbr), 2, &[0, 1]);
        p.observe(conn(0, 40_000, cubic), 2, &[0, 1]);
        p.observe(conn(0, 40_000, cubic), 2, &[0, 1]);
        assert!(p.ready());
        assert_eq!(p.greedy_set(&avail), vec![1], "{p:?}");
        assert!(
            p.algs[0].metric > 500_000,
            "cubic's cost reflects its deficit: {p:?}"
        );
        assert!(p.algs[1].metric < 10_000, "{p:?}");
        assert_eq!(p.algs[0].count, 3);
        assert_eq!(p.instances, 4);
        // Connections with an algorithm we do not choose among still count.
        assert_eq!(
            p.observe(
                Observation {
                    alg: None,
                    min_rtt_us: 39_000,
                    rate: 1
                },
                2,
                &[0, 1]
            ),
            None
        );
        assert_eq!((p.instances, p.min_rtt_us), (5, 39_000));
    }

    #[test]
    fn greedy_counts_only_when_lowest_before_the_update() {
        let mut p = PathStats::default();
        p.algs[0].metric = 100;
        p.algs[1].metric = 50;
        p.algs[2].metric = 0; // htcp: not offered here, does not compete
        p.observe(conn(0, 1, 1), 2, &[0, 1]);
        assert_eq!(p.algs[0].greedy, 0);
        p.observe(conn(1, 1, 1), 2, &[0, 1]);
        assert_eq!(p.algs[1].greedy, 1);
    }

    #[test]
    fn greedy_set_ties_and_unavailable() {
        let mut p = PathStats::default();
        p.algs[0].metric = 10;
        p.algs[1].metric = 10;
        p.algs[2].metric = 0; // htcp looks best but the kernel lacks it
        assert_eq!(p.greedy_set(&[0, 1]), vec![0, 1]);
        assert_eq!(p.greedy_set(&[0, 1, 2]), vec![2]);
        assert_eq!(p.greedy_set(&[]), Vec::<usize>::new());
    }

    #[test]
    fn epsilon_greedy_explores_one_in_epsilon() {
        let greedy = [1];
        let avail = [0, 1, 3];
        assert_eq!(epsilon_greedy(&greedy, &avail, 20, 7, 0), Some(1));
        assert_eq!(epsilon_greedy(&greedy, &avail, 20, 40, 0), Some(0));
        assert_eq!(epsilon_greedy(&greedy, &avail, 20, 40, 2), Some(3));
        let explored = (0..2000u32)
            .filter(|&d| epsilon_greedy(&greedy, &avail, 20, d, 0) != Some(1))
            .count();
        assert_eq!(explored, 100, "5 % of draws explore");
        assert_eq!(epsilon_greedy(&[], &avail, 20, 1, 0), None);
    }

    /// A small deterministic generator for the tests.
    fn lcg(seed: u32) -> impl FnMut() -> u32 {
        let mut s = seed;
        move || {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            s >> 8
        }
    }

    #[test]
    fn choice_table_has_exactly_one_exploration_slot() {
        let mut p = PathStats {
            instances: MIN_INSTANCES,
            ..PathStats::default()
        };
        p.algs[0].metric = 900_000;
        p.algs[1].metric = 1_000;
        let avail = [0, 1];
        let mut rand = lcg(1);
        let mut cubic_slots = 0;
        for _ in 0..400 {
            let t = choice_table(&p, &avail, &mut rand).expect("ready");
            let c = t.iter().filter(|&&a| a == 0).count();
            assert!(c <= 1, "at most the exploration slot picks cubic: {t:?}");
            assert!(t.iter().all(|&a| a == 0 || a == 1));
            cubic_slots += c;
        }
        // The exploration slot picks uniformly among 2: about half the tables.
        assert!((150..=250).contains(&cubic_slots), "{cubic_slots}");
        // Ties are broken at random, slot by slot.
        p.algs[0].metric = 1_000;
        let t = choice_table(&p, &avail, &mut rand).expect("ready");
        assert!(t.contains(&0) && t.contains(&1), "{t:?}");
    }

    #[test]
    fn no_table_without_history_or_algorithms() {
        let p = PathStats {
            instances: MIN_INSTANCES - 1,
            ..PathStats::default()
        };
        let mut rand = lcg(2);
        assert_eq!(choice_table(&p, &[0, 1], &mut rand), None);
        let p = PathStats {
            instances: MIN_INSTANCES,
            ..PathStats::default()
        };
        assert_eq!(choice_table(&p, &[], &mut rand), None);
        // Untried algorithms (value 0) are all greedy: they get tried first.
        let t = choice_table(&p, &[0, 1], &mut rand).expect("ready");
        assert!(t.iter().all(|&a| a == 0 || a == 1));
    }

    #[test]
    fn observe_mode_proposes_the_greedy_set_once_steered() {
        let mut p = PathStats::default();
        for _ in 0..3 {
            p.observe(conn(0, 40_000, 1000), 2, &[0, 1]);
        }
        assert_eq!(proposed_choice(&p, &[0, 1], Some(0)), None, "not steered yet");
        p.observe(conn(0, 50_000, 1000), 2, &[0, 1]);
        // Only cubic ever ran (observe mode): untried bbr (value 0) comes first.
        assert!(p.algs[0].metric > 0);
        assert_eq!(proposed_choice(&p, &[0, 1], Some(0)), Some(vec![1]));
        assert_eq!(
            proposed_choice(&p, &[0], Some(0)),
            None,
            "cubic kept: nothing to propose"
        );
        assert_eq!(
            proposed_choice(&p, &[0], None),
            Some(vec![0]),
            "an algorithm not ours"
        );
        assert_eq!(proposed_choice(&p, &[], Some(0)), None);
    }

    #[test]
    fn available_and_allowed() {
        assert_eq!(available("reno bbr cubic"), vec![0, 1]);
        assert_eq!(available("reno cubic htcp dctcp bbr"), vec![0, 1, 2, 3]);
        assert_eq!(
            allowed_update("reno bbr", "reno bbr cubic"),
            Some("reno bbr cubic".to_string())
        );
        assert_eq!(allowed_update("reno bbr cubic", "reno bbr cubic"), None);
        // The kernel's order, whatever order ours is in.
        assert_eq!(
            allowed_update("reno", "reno cubic htcp bbr"),
            Some("reno cubic htcp bbr".to_string())
        );
        assert_eq!(allowed_update("", "bbr"), Some("bbr".to_string()));
        let long = format!("reno {}", "x".repeat(122));
        assert_eq!(
            allowed_update(&long, &format!("{long} cubic")),
            None,
            "too long for the sysctl"
        );
        assert_eq!(alg_index("dctcp"), Some(3));
        assert_eq!(alg_index("reno"), None);
    }
}
