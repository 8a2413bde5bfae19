//! The one percentile definition of the crate: numpy's default (`method="linear"`). `hd95`
//! needs it for medpy parity ([`crate::metrics`]), and the timing summaries (`bench model`,
//! `bench train`, `train`, the pipeline's latency) use it too, so every percentile the tool
//! reports means the same thing.
//!
//! Std only.

/// `numpy.percentile(values, p)` with the default `method="linear"`: sort, take the virtual
/// index `(n - 1) * p / 100` and interpolate between its neighbours, computing from the upper
/// neighbour when the fraction is >= 0.5 as numpy's `_lerp` does. `None` for no values or a `p`
/// outside `[0, 100]`; NaNs sort last (numpy would return NaN).
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile_sorted(&sorted, p)
}

/// [`percentile`] of values already sorted ascending (by `f64::total_cmp`): several
/// percentiles of one set sort it once.
pub fn percentile_sorted(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let q = p / 100.0;
    let last = sorted.len() - 1;
    let index = q * last as f64;
    let lo = (index.floor() as usize).min(last);
    let hi = (lo + 1).min(last);
    let t = index - lo as f64;
    let (a, b) = (sorted[lo], sorted[hi]);
    let diff = b - a;
    Some(if t >= 0.5 { b - diff * (1.0 - t) } else { a + diff * t })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9
    }

    #[test]
    fn percentile_like_numpy() {
        // numpy.percentile([1, 2, 3, 4], 95) = 3.85 (index 2.85 between 3 and 4).
        assert!(close(percentile(&[4.0, 1.0, 3.0, 2.0], 95.0).unwrap(), 3.85));
        // numpy.percentile([0, 10], 50) = 5.0; [7] -> 7.0; p=100 -> max; p=0 -> min.
        assert_eq!(percentile(&[10.0, 0.0], 50.0), Some(5.0));
        assert_eq!(percentile(&[7.0], 95.0), Some(7.0));
        assert_eq!(percentile(&[1.0, 9.0, 5.0], 100.0), Some(9.0));
        assert_eq!(percentile(&[1.0, 9.0, 5.0], 0.0), Some(1.0));
        // numpy.percentile(arange(21), 95) = 19.0 (index 0.95 * 20).
        let v: Vec<f64> = (0..21).map(f64::from).collect();
        assert!(close(percentile(&v, 95.0).unwrap(), 19.0));
        // numpy.percentile(arange(1, 101), [50, 95, 99]) = [50.5, 95.05, 99.01].
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!(close(percentile_sorted(&v, 50.0).unwrap(), 50.5));
        assert!(close(percentile_sorted(&v, 95.0).unwrap(), 95.05));
        assert!(close(percentile_sorted(&v, 99.0).unwrap(), 99.01));
        assert_eq!(percentile(&[], 95.0), None);
        assert_eq!(percentile_sorted(&[], 50.0), None);
        assert_eq!(percentile(&[1.0], 101.0), None);
    }
}
