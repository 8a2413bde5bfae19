//! A frame on its way from capture to output: its pixels ([`FrameBuffer`]), their geometry
//! ([`FrameLayout`], with the byte-size arithmetic and its checks), its stream timing
//! ([`Timing`]) and its stamps; and a frame borrowed from anyone ([`FrameRef`], [`FrameView`]:
//! pixels, layout and [`PixelFormat`]), which is what the per-frame processing works on.

use super::error::{PipelineError, Result};
use super::latency::Stamps;
pub use crate::pixel::PixelFormat;

/// Bytes per pixel of the annotated frames (BGR).
pub const BGR: usize = 3;
/// Bytes per pixel of the masks (GRAY8).
pub const GREY: usize = 1;

/// Geometry of a frame in memory: `height` rows of `width` pixels, each row starting `stride`
/// bytes after the previous one (GStreamer pads BGR rows to 4 bytes). The pixel size is the
/// caller's (it depends on the format: [`BGR`], [`GREY`]); every size is computed with checked
/// arithmetic, so a huge or inconsistent frame is an error, never an overflow or a panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLayout {
    pub width: usize,
    pub height: usize,
    /// Bytes from the start of one row to the start of the next.
    pub stride: usize,
}

impl FrameLayout {
    /// Rows without padding: `stride = width * bytes_per_pixel`.
    pub fn packed(width: usize, height: usize, bytes_per_pixel: usize) -> Result<FrameLayout> {
        let stride = width.checked_mul(bytes_per_pixel).ok_or(PipelineError::FrameTooLarge { width, height })?;
        Ok(FrameLayout { width, height, stride })
    }

    pub fn size(self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// Bytes of pixels in one row (the stride may add padding after them).
    pub fn row_bytes(self, bytes_per_pixel: usize) -> Result<usize> {
        self.width.checked_mul(bytes_per_pixel).ok_or(PipelineError::FrameTooLarge { width: self.width, height: self.height })
    }

    /// The fewest bytes that hold the frame: every row at its stride, the last one only up to its
    /// last pixel (GStreamer may leave out the last row's padding). 0 for an empty frame.
    pub fn min_len(self, bytes_per_pixel: usize) -> Result<usize> {
        let row = self.row_bytes(bytes_per_pixel)?;
        if self.height == 0 || row == 0 {
            return Ok(0);
        }
        (self.height - 1)
            .checked_mul(self.stride)
            .and_then(|n| n.checked_add(row))
            .ok_or(PipelineError::FrameTooLarge { width: self.width, height: self.height })
    }

    /// Checks that a `len`-byte buffer holds the frame: each row's pixels fit in the stride, and
    /// the buffer is at least [`FrameLayout::min_len`]. After it, indexing rows
    /// `y * stride .. y * stride + row_bytes` for `y < height` cannot go out of bounds.
    pub fn check(self, what: &'static str, len: usize, bytes_per_pixel: usize) -> Result<()> {
        let row = self.row_bytes(bytes_per_pixel)?;
        // A row wider than the stride would run into the next one.
        if (self.height > 1 && row > self.stride) || len < self.min_len(bytes_per_pixel)? {
            return Err(PipelineError::BufferSize {
                what,
                width: self.width,
                height: self.height,
                stride: self.stride,
                bytes_per_pixel,
                len,
            });
        }
        Ok(())
    }
}

/// A frame borrowed for reading: its pixels, their layout and format, checked against each other
/// (every row of the layout lies inside `data`).
#[derive(Clone, Copy, Debug)]
pub struct FrameRef<'a> {
    data: &'a [u8],
    layout: FrameLayout,
    format: PixelFormat,
}

impl<'a> FrameRef<'a> {
    pub fn new(data: &'a [u8], layout: FrameLayout, format: PixelFormat) -> Result<FrameRef<'a>> {
        layout.check("frame", data.len(), format.bytes_per_pixel())?;
        Ok(FrameRef { data, layout, format })
    }

    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    pub fn layout(&self) -> FrameLayout {
        self.layout
    }

    pub fn format(&self) -> PixelFormat {
        self.format
    }
}

/// A frame borrowed for drawing in place: the pipeline's own [`Frame`] buffers (BGR) and a
/// GStreamer element's mapped video frames (BGR, BGRx, RGB, RGBx) alike. Checked like
/// [`FrameRef`].
#[derive(Debug)]
pub struct FrameView<'a> {
    data: &'a mut [u8],
    layout: FrameLayout,
    format: PixelFormat,
}

impl<'a> FrameView<'a> {
    pub fn new(data: &'a mut [u8], layout: FrameLayout, format: PixelFormat) -> Result<FrameView<'a>> {
        layout.check("frame", data.len(), format.bytes_per_pixel())?;
        Ok(FrameView { data, layout, format })
    }

    pub fn as_ref(&self) -> FrameRef<'_> {
        FrameRef { data: self.data, layout: self.layout, format: self.format }
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        self.data
    }

    pub fn layout(&self) -> FrameLayout {
        self.layout
    }

    pub fn format(&self) -> PixelFormat {
        self.format
    }
}

/// Anything a batch of model inputs can be made from ([`Frame`], [`FrameRef`]).
pub trait AsFrameRef: Sync {
    fn frame_ref(&self) -> Result<FrameRef<'_>>;
}

impl AsFrameRef for FrameRef<'_> {
    fn frame_ref(&self) -> Result<FrameRef<'_>> {
        Ok(*self)
    }
}

/// A frame's pixels: BGR rows of `stride` bytes in a GStreamer buffer of our own, mapped
/// writable. It is filled once at capture, the overlay is drawn into it, and the same buffer is
/// pushed into the output pipeline: one copy of the frame on its way, not two (a 1080p frame is
/// 6 MB, about a millisecond per copy here).
#[derive(Debug)]
pub struct FrameBuffer(pub gst::MappedBuffer<gst::buffer::Writable>);

impl std::ops::Deref for FrameBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

impl std::ops::DerefMut for FrameBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.0.as_mut_slice()
    }
}

/// A frame's stream timing and identity, as it goes out: the input's frame rate, PTS (kept in
/// recorded mode; live output is stamped on push) and duration, and its capture number (written
/// into the buffer's offset for the output pad probe).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub fps: gst::Fraction,
    pub pts: Option<gst::ClockTime>,
    pub duration: Option<gst::ClockTime>,
    pub seq: u64,
}

/// A frame's mask for the masks output: `width * height` bytes, 0 or 255, packed. Frames shown
/// with the same mask (live, latest-mask) share its pixels and its `key`, and the masks output
/// pushes the buffer it already made for that key (no copy per frame).
#[derive(Clone, Debug)]
pub struct FrameMask {
    /// Equal keys, equal pixels (within one run).
    pub key: u64,
    pub data: std::sync::Arc<Vec<u8>>,
}

/// One captured frame: BGR pixels in `layout`, its stream timing and its stamps.
#[derive(Debug)]
pub struct Frame {
    /// Capture order, from 0. Also written into the output buffers' `offset` so that the output
    /// pad probe can find the frame again.
    pub seq: u64,
    pub pts: Option<gst::ClockTime>,
    pub duration: Option<gst::ClockTime>,
    pub fps: gst::Fraction,
    /// Stride: GStreamer's default for BGR, `width * 3` rounded up to 4.
    pub layout: FrameLayout,
    pub data: FrameBuffer,
    pub stamps: Stamps,
}

impl Frame {
    pub fn timing(&self) -> Timing {
        Timing { fps: self.fps, pts: self.pts, duration: self.duration, seq: self.seq }
    }

    /// The pixels to draw on (BGR).
    pub fn view(&mut self) -> Result<FrameView<'_>> {
        FrameView::new(&mut self.data, self.layout, PixelFormat::Bgr)
    }
}

impl AsFrameRef for Frame {
    fn frame_ref(&self) -> Result<FrameRef<'_>> {
        FrameRef::new(&self.data, self.layout, PixelFormat::Bgr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_sizes_and_checks() {
        let l = FrameLayout { width: 5, height: 3, stride: 16 };
        assert_eq!(l.row_bytes(BGR).unwrap(), 15);
        // Two full rows and the last one's pixels; its padding may be missing.
        assert_eq!(l.min_len(BGR).unwrap(), 2 * 16 + 15);
        assert!(l.check("frame", 47, BGR).is_ok());
        let short = l.check("frame", 46, BGR).unwrap_err().to_string();
        assert!(short.contains("frame") && short.contains("46 bytes"), "{short}");
        // Rows wider than the stride overlap: refused whatever the length.
        assert!(FrameLayout { width: 6, height: 2, stride: 16 }.check("frame", 1000, BGR).is_err());
        assert_eq!(FrameLayout::packed(5, 3, GREY).unwrap(), FrameLayout { width: 5, height: 3, stride: 5 });
        assert_eq!(FrameLayout { width: 0, height: 0, stride: 0 }.min_len(BGR).unwrap(), 0);
        assert!(FrameLayout::packed(usize::MAX, 2, BGR).is_err());
        assert!(FrameLayout { width: 4, height: usize::MAX, stride: 12 }.min_len(BGR).is_err());
    }
}
