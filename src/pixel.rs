//! The packed 8-bit colour formats frames come in: BGR (the pipeline's own, OpenCV's order),
//! BGRx, RGB and RGBx (what a GStreamer element is handed). A leaf: the model input
//! ([`crate::preprocess`]), the drawing ([`crate::postprocess`]) and the pipeline all read a
//! pixel through [`PixelFormat`].
//!
//! Hot loops never branch on the format per pixel: a caller matches the format once per frame
//! and runs a loop monomorphised for its bytes per pixel and channel offsets (const generics).

use std::fmt;
use std::str::FromStr;

/// A packed pixel format with 8 bits per channel (the `x` byte of the 4-byte formats is padding:
/// read never, written never).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    Bgr,
    Bgrx,
    Rgb,
    Rgbx,
}

impl PixelFormat {
    pub const ALL: [PixelFormat; 4] = [PixelFormat::Bgr, PixelFormat::Bgrx, PixelFormat::Rgb, PixelFormat::Rgbx];

    pub const fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Bgr | PixelFormat::Rgb => 3,
            PixelFormat::Bgrx | PixelFormat::Rgbx => 4,
        }
    }

    /// Byte offsets of blue, green and red inside a pixel.
    pub const fn bgr_offsets(self) -> [usize; 3] {
        match self {
            PixelFormat::Bgr | PixelFormat::Bgrx => [0, 1, 2],
            PixelFormat::Rgb | PixelFormat::Rgbx => [2, 1, 0],
        }
    }

    /// A colour given in BGR order as this format's first three bytes (what a drawing function
    /// copies into each pixel).
    pub const fn color_from_bgr(self, [b, g, r]: [u8; 3]) -> [u8; 3] {
        match self {
            PixelFormat::Bgr | PixelFormat::Bgrx => [b, g, r],
            PixelFormat::Rgb | PixelFormat::Rgbx => [r, g, b],
        }
    }

    /// GStreamer's name of the format (`video/x-raw,format=...`).
    pub const fn name(self) -> &'static str {
        match self {
            PixelFormat::Bgr => "BGR",
            PixelFormat::Bgrx => "BGRx",
            PixelFormat::Rgb => "RGB",
            PixelFormat::Rgbx => "RGBx",
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PixelFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<PixelFormat, String> {
        PixelFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| format!("pixel format `{s}`: expected one of BGR, BGRx, RGB, RGBx"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        for f in PixelFormat::ALL {
            assert_eq!(f.name().parse::<PixelFormat>().unwrap(), f);
            // Blue, green and red are three distinct bytes inside the pixel.
            let o = f.bgr_offsets();
            assert!(o.iter().all(|&i| i < f.bytes_per_pixel()) && o[0] != o[1] && o[1] != o[2] && o[0] != o[2]);
            // The reordered colour puts each channel at its offset.
            let c = f.color_from_bgr([10, 20, 30]);
            assert_eq!([c[o[0]], c[o[1]], c[o[2]]], [10, 20, 30]);
        }
        assert!("I420".parse::<PixelFormat>().is_err());
    }
}
