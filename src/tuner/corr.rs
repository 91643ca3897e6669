//! Pearson correlation over cumulative sums (C bpftune's corr.h), kept per tuner and
//! keyed by the caller (so tuners never share a key space, unlike C bpftune).

/// Below this many samples the correlation is reported as 0.
pub const CORR_MIN_SAMPLES: u64 = 10;
/// Correlation above this means "the increase hurts": back off instead.
pub const CORR_THRESHOLD: f64 = 0.75;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Corr {
    n: u64,
    sx: f64,
    sy: f64,
    sxx: f64,
    syy: f64,
    sxy: f64,
    min_y: f64,
    max_y: f64,
}

impl Corr {
    pub fn update(&mut self, x: f64, y: f64) {
        if !x.is_finite() || !y.is_finite() {
            return;
        }
        if self.n == 0 {
            self.min_y = y;
            self.max_y = y;
        }
        self.n += 1;
        self.sx += x;
        self.sy += y;
        self.sxx += x * x;
        self.syy += y * y;
        self.sxy += x * y;
        self.min_y = self.min_y.min(y);
        self.max_y = self.max_y.max(y);
    }

    pub fn samples(&self) -> u64 {
        self.n
    }

    /// Pearson r; 0 with fewer than CORR_MIN_SAMPLES samples or zero variance.
    pub fn r(&self) -> f64 {
        if self.n < CORR_MIN_SAMPLES {
            return 0.0;
        }
        let n = self.n as f64;
        let cov = (self.sxy - self.sx * self.sy / n) / (n - 1.0);
        let vx = (self.sxx - self.sx * self.sx / n) / (n - 1.0);
        let vy = (self.syy - self.sy * self.sy / n) / (n - 1.0);
        if vx <= 0.0 || vy <= 0.0 {
            return 0.0;
        }
        let r = cov / (vx.sqrt() * vy.sqrt());
        if r.is_finite() {
            r.clamp(-1.0, 1.0)
        } else {
            0.0
        }
    }

    /// Relative spread of y: (max - min) / mean. Lets callers ignore a "correlation"
    /// with jitter too small to matter (e.g. srtt moving by 1 %).
    pub fn y_spread(&self) -> f64 {
        if self.n == 0 || self.sy <= 0.0 {
            return 0.0;
        }
        (self.max_y - self.min_y) / (self.sy / self.n as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_correlation() {
        let mut c = Corr::default();
        for i in 0..20 {
            c.update(i as f64, 2.0 * i as f64 + 1.0);
        }
        assert!((c.r() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn too_few_samples_or_flat() {
        let mut c = Corr::default();
        for i in 0..9 {
            c.update(i as f64, i as f64);
        }
        assert_eq!(c.r(), 0.0);
        let mut flat = Corr::default();
        for i in 0..20 {
            flat.update(i as f64, 5.0);
        }
        assert_eq!(flat.r(), 0.0);
        assert_eq!(flat.y_spread(), 0.0);
    }

    #[test]
    fn anti_correlation_and_spread() {
        let mut c = Corr::default();
        for i in 0..20 {
            c.update(i as f64, 100.0 - i as f64);
        }
        assert!(c.r() < -0.99);
        assert!(c.y_spread() > 0.2);
        assert!(c.r() < CORR_THRESHOLD);
    }
}
