//! Masks drawn as text for the tests: rows of `#` (lesion) and `.` (background).

use crate::metrics::Mask;

/// Builds a mask from rows of `#` (lesion) and `.` (background).
pub(super) fn art(rows: &[&str]) -> Mask {
    let h = rows.len();
    let w = rows.first().map_or(0, |r| r.len());
    let data = rows
        .iter()
        .flat_map(|r| r.bytes().map(|b| b == b'#'))
        .collect();
    Mask::from_vec(w, h, data).unwrap()
}

pub(super) fn show(m: &Mask) -> Vec<String> {
    (0..m.height)
        .map(|y| {
            (0..m.width)
                .map(|x| if m.get(x, y) { '#' } else { '.' })
                .collect()
        })
        .collect()
}
