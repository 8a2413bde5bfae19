//! What to render: [`PhantomConfig`] with the transducer [`Probe`], the frame size limits and
//! their validation, and the [`PixelLayout`]s frames can be written in.

/// Smallest accepted frame side: below this the image region and text no longer fit.
pub const MIN_SIDE: usize = 64;
/// Largest accepted frame side (8K); bounds memory for the precomputed tables.
pub const MAX_SIDE: usize = 8192;

/// Highest accepted frame rate. Scanners show tens of frames per second; the rate also becomes
/// a GStreamer fraction of 32-bit integers and a whole-nanosecond frame duration, which larger
/// values overflow (`--fps 4000000000` wrote frames without timestamps).
pub const MAX_FPS: u32 = 1000;

/// Transducer geometry, which decides the shape of the image region.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Probe {
    /// Linear array: a rectangular image, as in breast imaging (BUSI) and the default.
    #[default]
    Linear,
    /// Convex (curvilinear) array: a fan-shaped sector with curved top and bottom edges.
    Convex,
}

/// Byte layout for [`Phantom::fill_into`](crate::phantom::Phantom::fill_into). The phantom is
/// pure grey, so every colour channel order (RGB/BGR, RGBx/BGRx/RGBA/BGRA) receives the same bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelLayout {
    /// One byte per pixel.
    Gray8,
    /// Three bytes per pixel (RGB or BGR).
    Rgb8,
    /// Four bytes per pixel, fourth byte 255 (RGBx, BGRx, RGBA, BGRA).
    Rgbx8,
}

impl PixelLayout {
    /// Bytes one pixel occupies in this layout.
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelLayout::Gray8 => 1,
            PixelLayout::Rgb8 => 3,
            PixelLayout::Rgbx8 => 4,
        }
    }
}

/// What to render. Construct with `PhantomConfig { width: 1280, height: 720, ..Default::default() }`.
#[derive(Clone, Debug, PartialEq)]
pub struct PhantomConfig {
    /// Frame width in pixels (the whole scanner screen), 64..=8192. Default 640.
    pub width: usize,
    /// Frame height in pixels, 64..=8192. Default 480.
    pub height: usize,
    /// Frames per second; frame `i` shows time `i / fps`, so motion is defined in seconds
    /// and looks the same at any rate. Default 25.
    pub fps: u32,
    /// Seed for anatomy, speckle, lesion shape and path. Same seed and index give the same
    /// bytes. Default 0.
    pub seed: u64,
    /// Whether there is a lesion (and so a non-empty mask). Default true.
    pub lesion: bool,
    /// Draw calipers ('+' marks and a dotted line) on the lesion's long axis, inside the
    /// image like a measurement on a real scanner. Off by default because they sit on the
    /// lesion and would disturb segmentation tests. Default false.
    pub calipers: bool,
    /// Draw scanner-style UI in the black border: title, probe, depth, gain, frame counter,
    /// depth scale and orientation marker. It never touches the image region. Default true.
    pub scanner_text: bool,
    /// Probe geometry. Default [`Probe::Linear`].
    pub probe: Probe,
    /// Displayed depth in cm: labels the depth scale and converts caliper lengths. Default 4.0.
    pub depth_cm: f32,
    /// Overall gain, 0..=100 (shown as "GAIN n%"); 60 is the calibrated default and each step
    /// is 0.3 dB.
    pub gain: u8,
    /// Mean lesion radius as a fraction of the image region's width, 0.02..=0.25. Default 0.09.
    pub lesion_radius: f32,
}

impl Default for PhantomConfig {
    fn default() -> Self {
        PhantomConfig {
            width: 640,
            height: 480,
            fps: 25,
            seed: 0,
            lesion: true,
            calipers: false,
            scanner_text: true,
            probe: Probe::Linear,
            depth_cm: 4.0,
            gain: 60,
            lesion_radius: 0.09,
        }
    }
}

/// Displayed dynamic range in dB (log compression); fixed, shown as "DR 60" in the scanner text.
pub(super) const DR_DB: f32 = 60.0;

impl PhantomConfig {
    /// Refuses a configuration `Phantom::new` cannot render, saying which field and why.
    pub fn validate(&self) -> Result<(), String> {
        let (w, h) = (self.width, self.height);
        if !(MIN_SIDE..=MAX_SIDE).contains(&w) || !(MIN_SIDE..=MAX_SIDE).contains(&h) {
            return Err(format!(
                "phantom size {w}x{h} out of range: each side must be {MIN_SIDE}..={MAX_SIDE}"
            ));
        }
        if !(1..=MAX_FPS).contains(&self.fps) {
            return Err(format!("phantom fps {} not in 1..={MAX_FPS}", self.fps));
        }
        if !(self.depth_cm >= 0.5 && self.depth_cm <= 40.0) {
            return Err(format!(
                "phantom depth_cm {} not in 0.5..=40",
                self.depth_cm
            ));
        }
        if self.gain > 100 {
            return Err(format!("phantom gain {} not in 0..=100", self.gain));
        }
        if !(self.lesion_radius >= 0.02 && self.lesion_radius <= 0.25) {
            return Err(format!(
                "phantom lesion_radius {} not in 0.02..=0.25",
                self.lesion_radius
            ));
        }
        Ok(())
    }
}
