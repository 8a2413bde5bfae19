//! The bounds of the `.pth` reader, in one place: how large and how deep a `data.pkl` may be and
//! how many objects it may make candle's reader build, how many bytes its storages and tensors
//! may take ([`Budget`]); and the plain-reason result its parts return.

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

/// Bytes the storages, and separately the tensors, of one `.pth` may take beyond the file's own
/// size. PyTorch stores each storage uncompressed and each tensor as a contiguous view of its
/// storage, so a real checkpoint's tensors add up to about its size. A strided view can stand for
/// far more than it stores (an `expand`ed tensor has stride 0: a 1.6 KB file described 4 TB), and
/// a compressed member can inflate a thousandfold. The largest weight in the family is U-net's
/// `up1` 3x3 convolution, 4.7 M values (18 MB as f32), so this leaves room for any real view.
pub(super) const MAX_EXPANSION_BYTES: usize = 256 << 20;

/// Bytes left to a file's storages or tensors: the file's size plus [`MAX_EXPANSION_BYTES`].
#[derive(Debug)]
pub(super) struct Budget {
    file_len: usize,
    left: usize,
}

impl Budget {
    pub(super) fn for_file(file_len: usize) -> Budget {
        Budget { file_len, left: file_len.saturating_add(MAX_EXPANSION_BYTES) }
    }

    pub(super) fn left(&self) -> usize {
        self.left
    }

    /// Takes `bytes` from the budget, or says why `what` is refused.
    pub(super) fn take(&mut self, bytes: usize, what: &str) -> Reason<()> {
        if bytes > self.left {
            return Err(format!(
                "{what} needs {}, more than a file of {} can justify (a checkpoint's tensors add up to about \
                 its own size; at most {} more is accepted)",
                human_bytes(bytes as f64),
                human_bytes(self.file_len as f64),
                human_bytes(MAX_EXPANSION_BYTES as f64)
            ));
        }
        self.left -= bytes;
        Ok(())
    }
}

/// `1.6 KiB`, `4.0 TiB`.
pub(super) fn human_bytes(mut v: f64) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < units.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} bytes")
    } else {
        format!("{v:.1} {}", units[unit])
    }
}
