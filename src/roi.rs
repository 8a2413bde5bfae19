//! The region of interest: the part of a frame (in frame pixels) that the model sees. A leaf used
//! by the preprocessing, the pipeline and the element alike.

use std::fmt;
use std::str::FromStr;

/// Region of interest `(x, y, w, h)` in frame pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roi {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

/// An ROI that does not fit its frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ROI {roi} does not fit in the {width}x{height} frame")]
pub struct RoiMisfit {
    pub roi: Roi,
    pub width: usize,
    pub height: usize,
}

impl Roi {
    pub fn full(width: usize, height: usize) -> Roi {
        Roi { x: 0, y: 0, w: width, h: height }
    }

    /// The ROI as it applies to a `width x height` frame, or an error when it does not fit.
    /// Checked arithmetic: `x + w` of a user's numbers may not fit a `usize`.
    pub fn check(self, width: usize, height: usize) -> Result<Roi, RoiMisfit> {
        let fits = |start: usize, len: usize, limit: usize| len > 0 && start.checked_add(len).is_some_and(|end| end <= limit);
        if fits(self.x, self.w, width) && fits(self.y, self.h, height) {
            Ok(self)
        } else {
            Err(RoiMisfit { roi: self, width, height })
        }
    }
}

impl fmt::Display for Roi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{},{}", self.x, self.y, self.w, self.h)
    }
}

impl FromStr for Roi {
    type Err = String;
    fn from_str(s: &str) -> Result<Roi, String> {
        let v: Vec<usize> = s
            .split(',')
            .map(|p| p.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("ROI `{s}`: expected x,y,w,h in pixels (non-negative integers)"))?;
        match v[..] {
            [x, y, w, h] if w > 0 && h > 0 => Ok(Roi { x, y, w, h }),
            [_, _, _, _] => Err(format!("ROI `{s}`: width and height must be positive")),
            _ => Err(format!("ROI `{s}`: expected four numbers x,y,w,h")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roi_parses_and_checks() {
        let r: Roi = "10,20,30,40".parse().unwrap();
        assert_eq!(r, Roi { x: 10, y: 20, w: 30, h: 40 });
        assert!("1,2,3".parse::<Roi>().is_err());
        assert!("1,2,0,4".parse::<Roi>().is_err());
        assert!(r.check(40, 60).is_ok());
        assert!(r.check(39, 60).is_err());
        assert_eq!(r.check(39, 60).unwrap_err().to_string(), "ROI 10,20,30,40 does not fit in the 39x60 frame");
    }

    /// `x + w` past `usize::MAX` is a misfit, not a wrap-around that passes the check.
    #[test]
    fn huge_numbers_do_not_wrap() {
        let r: Roi = "18446744073709551615,0,10,10".parse().unwrap();
        assert!(r.check(1920, 1080).is_err());
        let r = Roi { x: 0, y: usize::MAX, w: 10, h: 2 };
        assert!(r.check(1920, 1080).is_err());
    }
}
