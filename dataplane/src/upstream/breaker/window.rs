//! The failures of a closed circuit within its sliding `window`, in bounded memory: the
//! timestamps of the last `failure_threshold` failures when the threshold is small (exact),
//! else per-slice counts over [`SLICES`] slices of the window (a failure is forgotten
//! between `window` and `window × (1 + 1/SLICES)` after it happened).

use std::collections::VecDeque;
use std::time::Duration;

/// Up to this threshold, failures are kept as timestamps (exact).
pub(super) const EXACT_MAX: u32 = 256;

/// Slices of the window when the threshold is larger.
pub(super) const SLICES: usize = 32;

/// Failures within the window; times are nanoseconds since the breaker's epoch.
#[derive(Debug)]
pub(super) enum FailureWindow {
    /// The last `threshold` failure times, oldest first (allocated on the first failure).
    Exact {
        /// Failure times.
        times: VecDeque<u64>,
        /// How many are kept.
        threshold: usize,
        /// The window, in nanoseconds.
        window: u64,
    },
    /// Failure counts per slice of the window: `(slice number, count)` at `number % SLICES`.
    Sliced {
        /// The slices.
        slices: Box<[(u64, u32)]>,
        /// One slice's width, in nanoseconds (at least 1).
        width: u64,
    },
}

impl FailureWindow {
    /// An empty window for `threshold` failures within `window`.
    pub(super) fn new(threshold: u32, window: Duration) -> Self {
        let window = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        if threshold <= EXACT_MAX {
            FailureWindow::Exact {
                times: VecDeque::new(),
                threshold: threshold.max(1) as usize,
                window,
            }
        } else {
            FailureWindow::Sliced {
                slices: vec![(0, 0); SLICES].into_boxed_slice(),
                width: (window / SLICES as u64).max(1),
            }
        }
    }

    /// Adds a failure at `now`; returns the failures within the window (this one included).
    pub(super) fn record(&mut self, now: u64) -> u32 {
        match self {
            FailureWindow::Exact { times, threshold, window } => {
                while times.front().is_some_and(|&t| now.saturating_sub(t) >= *window) {
                    times.pop_front();
                }
                if times.len() >= *threshold {
                    times.pop_front();
                }
                times.push_back(now);
                u32::try_from(times.len()).unwrap_or(u32::MAX)
            }
            FailureWindow::Sliced { slices, width } => {
                let number = now / *width;
                let slot = &mut slices[(number % SLICES as u64) as usize];
                // A slot of an older slice is reused; a time slightly out of order (another
                // task's `now`) is counted in the newer slice it finds.
                if slot.0 < number {
                    *slot = (number, 0);
                }
                slot.1 = slot.1.saturating_add(1);
                slices
                    .iter()
                    .filter(|(n, _)| number.saturating_sub(*n) < SLICES as u64)
                    .fold(0u32, |sum, (_, count)| sum.saturating_add(*count))
            }
        }
    }

    /// The failures within the window at `now` (nothing is recorded).
    pub(super) fn count(&self, now: u64) -> u32 {
        let n = match self {
            FailureWindow::Exact { times, window, .. } => {
                times.iter().filter(|&&t| now.saturating_sub(t) < *window).count()
            }
            FailureWindow::Sliced { slices, width } => {
                let number = now / *width;
                return slices
                    .iter()
                    .filter(|(n, _)| number.saturating_sub(*n) < SLICES as u64)
                    .fold(0u32, |sum, (_, count)| sum.saturating_add(*count));
            }
        };
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Forgets every failure.
    pub(super) fn clear(&mut self) {
        match self {
            FailureWindow::Exact { times, .. } => times.clear(),
            FailureWindow::Sliced { slices, .. } => slices.fill((0, 0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn exact_counts_only_failures_inside_the_window() {
        let mut w = FailureWindow::new(3, Duration::from_millis(100));
        assert_eq!(w.record(0), 1);
        assert_eq!(w.record(50 * MS), 2);
        // The failure at 0 is 100 ms old: out of the window.
        assert_eq!(w.record(100 * MS), 2);
        assert_eq!(w.record(120 * MS), 3);
        // Nothing newer than the window is kept beyond the threshold.
        assert_eq!(w.record(130 * MS), 3);
        assert_eq!(w.count(130 * MS), 3);
        assert_eq!(w.count(205 * MS), 2, "the failure at 100 ms left the window");
        assert_eq!(w.count(1000 * MS), 0);
        assert_eq!(w.record(500 * MS), 1);
    }

    #[test]
    fn exact_memory_is_bounded_by_the_threshold() {
        let mut w = FailureWindow::new(4, Duration::from_secs(3600));
        for i in 0..1000 {
            assert!(w.record(i) <= 4);
        }
        let FailureWindow::Exact { times, .. } = &w else { panic!("exact expected") };
        assert_eq!(times.len(), 4);
        w.clear();
        assert_eq!(w.record(2000), 1);
    }

    #[test]
    fn sliced_counts_large_thresholds_and_forgets_old_slices() {
        let mut w = FailureWindow::new(EXACT_MAX + 1, Duration::from_millis(320));
        assert!(matches!(w, FailureWindow::Sliced { .. }));
        // One slice is 10 ms.
        for i in 0..300 {
            assert_eq!(w.record(i * MS), i as u32 + 1);
        }
        // At 640 ms every failure above is more than a window old.
        assert_eq!(w.count(300 * MS), 300);
        assert_eq!(w.record(640 * MS), 1);
        // Slices wrap around without double counting.
        for i in 1..=64 {
            w.record(640 * MS + i * 10 * MS);
        }
        assert_eq!(w.record(640 * MS + 65 * 10 * MS), 32);
        w.clear();
        assert_eq!(w.record(5000 * MS), 1);
    }
}
