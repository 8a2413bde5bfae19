//! The bounds of the `.pth` reader, in one place: how large and how deep a `data.pkl` may be and
//! how many objects it may make candle's reader build; and the plain-reason result its parts
//! return.

/// Internal failures are plain reasons; `read_pth` attaches the path once, as
/// `Error::Checkpoint`, so every import failure reads the same way.
pub(super) type Reason<T> = std::result::Result<T, String>;

/// A model's `data.pkl` is tens of kilobytes; anything this large is not one.
pub(super) const MAX_PICKLE_BYTES: usize = 256 << 20;

/// Deepest object nesting accepted in `data.pkl`. A whole Lighter U-net (five levels of modules,
/// then the tensor records) nests 31 to 40 levels; far deeper trees would overflow the stack when
/// candle's recursive `Object` is dropped, which aborts the process instead of returning an error.
pub(super) const MAX_PICKLE_DEPTH: u32 = 256;

/// Most objects (created or cloned) candle's reader may build for one `data.pkl`. Its memo stores
/// and fetches deep copies, so a few hundred crafted bytes could otherwise ask for exponential
/// memory; real checkpoints need well under a million.
pub(super) const MAX_PICKLE_NODES: u64 = 1 << 22;
