//! A lock-free latency histogram over [`DURATION_BUCKETS`]: one `AtomicU64` per bucket
//! (plus overflow) and the sum in nanoseconds. Observing is a comparison against 15
//! integers and two relaxed atomic adds; reading it sums the buckets.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{DURATION_BUCKETS, HistogramView};

/// [`DURATION_BUCKETS`] in nanoseconds (a test checks they agree).
pub(crate) const BUCKET_NANOS: [u64; 15] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
];

/// Observations by bucket (not cumulative; the last slot is above every bound) and their
/// sum. The count is the sum of the buckets, so it always equals the `+Inf` bucket.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKET_NANOS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one observation: the bucket of the smallest bound ≥ `d` (bounds are
    /// inclusive, as Prometheus' `le`).
    pub fn observe(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let index = BUCKET_NANOS.partition_point(|&bound| bound < nanos);
        if let Some(bucket) = self.buckets.get(index) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The buckets (non-cumulative, `+Inf` last) as the metric encoder takes them, the
    /// count and the sum in seconds.
    pub(crate) fn encodable(&self) -> ([(f64, u64); BUCKET_NANOS.len() + 1], u64, f64) {
        let mut out = [(f64::INFINITY, 0u64); BUCKET_NANOS.len() + 1];
        let mut count = 0u64;
        for (i, slot) in out.iter_mut().enumerate() {
            let n = self.buckets.get(i).map_or(0, |b| b.load(Ordering::Relaxed));
            *slot = (DURATION_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), n);
            count += n;
        }
        (out, count, self.sum_seconds())
    }

    fn sum_seconds(&self) -> f64 {
        self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// The histogram read now.
    pub fn view(&self) -> HistogramView {
        let mut cumulative = Vec::with_capacity(BUCKET_NANOS.len());
        let mut running = 0u64;
        for bucket in &self.buckets[..BUCKET_NANOS.len()] {
            running += bucket.load(Ordering::Relaxed);
            cumulative.push(running);
        }
        let overflow = self.buckets[BUCKET_NANOS.len()].load(Ordering::Relaxed);
        HistogramView { cumulative, sum: self.sum_seconds(), count: running + overflow }
    }
}

/// A [`Histogram`] allocated at its first observation: a Route's latency histogram is
/// 136 bytes, and a Route that has served no request (most of a large configuration, at
/// any moment) reads as all zeros without holding one. Observing costs one more acquire
/// load than a plain histogram once it exists.
#[derive(Debug, Default)]
pub struct LazyHistogram(OnceLock<Box<Histogram>>);

impl LazyHistogram {
    /// Records one observation (see [`Histogram::observe`]), allocating the histogram the
    /// first time.
    pub fn observe(&self, d: Duration) {
        self.0.get_or_init(Box::default).observe(d);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0.get().map_or(0, |h| h.count())
    }

    /// See [`Histogram::encodable`] (all zeros before the first observation).
    pub(crate) fn encodable(&self) -> ([(f64, u64); BUCKET_NANOS.len() + 1], u64, f64) {
        match self.0.get() {
            Some(h) => h.encodable(),
            None => Histogram::default().encodable(),
        }
    }

    /// The histogram read now (all zeros before the first observation).
    pub fn view(&self) -> HistogramView {
        match self.0.get() {
            Some(h) => h.view(),
            None => Histogram::default().view(),
        }
    }

    /// Whether the histogram has been allocated (tests).
    #[cfg(test)]
    pub(crate) fn is_allocated(&self) -> bool {
        self.0.get().is_some()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_nanosecond_bounds_are_the_published_buckets() {
        assert_eq!(BUCKET_NANOS.len(), DURATION_BUCKETS.len());
        for (nanos, secs) in BUCKET_NANOS.iter().zip(DURATION_BUCKETS) {
            assert_eq!(*nanos, (secs * 1e9).round() as u64);
        }
        assert!(BUCKET_NANOS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_lazy_histogram_reads_zeros_until_its_first_observation_then_counts_like_a_plain_one() {
        let lazy = LazyHistogram::default();
        let plain = Histogram::default();
        assert!(!lazy.is_allocated());
        assert_eq!(lazy.view(), plain.view());
        assert_eq!(lazy.encodable(), plain.encodable());
        assert_eq!(lazy.count(), 0);
        assert!(!lazy.is_allocated(), "reading does not allocate");
        for d in [Duration::from_micros(300), Duration::from_millis(7), Duration::from_secs(40)] {
            lazy.observe(d);
            plain.observe(d);
        }
        assert!(lazy.is_allocated());
        assert_eq!(lazy.count(), 3);
        assert_eq!(lazy.view(), plain.view());
        assert_eq!(lazy.encodable(), plain.encodable());
    }

    #[test]
    fn bounds_are_inclusive_and_above_the_last_is_overflow() {
        let h = Histogram::default();
        h.observe(Duration::ZERO); // ≤ 0.5 ms
        h.observe(Duration::from_micros(500)); // exactly 0.5 ms: first bucket
        h.observe(Duration::from_nanos(500_001)); // just above: ≤ 1 ms
        h.observe(Duration::from_millis(1)); // exactly 1 ms
        h.observe(Duration::from_millis(30)); // ≤ 50 ms
        h.observe(Duration::from_secs(30)); // exactly the last bound
        h.observe(Duration::from_secs(31)); // overflow
        h.observe(Duration::from_secs(3_600)); // overflow
        let v = h.view();
        assert_eq!(v.count, 8);
        assert_eq!(v.cumulative.len(), 15);
        assert_eq!(v.cumulative[0], 2, "{v:?}");
        assert_eq!(v.cumulative[1], 4, "{v:?}");
        assert_eq!(v.cumulative[5], 4, "25 ms: {v:?}");
        assert_eq!(v.cumulative[6], 5, "50 ms: {v:?}");
        assert_eq!(v.cumulative[13], 5, "10 s: {v:?}");
        assert_eq!(v.cumulative[14], 6, "30 s: {v:?}");
        let (buckets, count, _) = h.encodable();
        assert_eq!(count, 8);
        assert_eq!(buckets[15], (f64::INFINITY, 2));
        assert_eq!(buckets[0], (0.0005, 2));
        assert_eq!(buckets[1], (0.001, 2));
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 8);
    }

    #[test]
    fn the_sum_is_exact_in_seconds() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(250));
        h.observe(Duration::from_millis(1_750));
        h.observe(Duration::from_micros(3));
        let v = h.view();
        assert_eq!(v.count, 3);
        assert_eq!(v.sum, 2.000003);
        assert_eq!(h.count(), 3);
    }
}
