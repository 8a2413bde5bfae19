//! Tensor files a training run writes, atomically ([`crate::atomic_write`]). The resumable
//! checkpoint is a single safetensors file (weights, optimizer moments, and the run state as JSON
//! metadata), so its parts can never disagree. Every file carries a CRC-32 of its tensors and
//! metadata ([`CHECKSUM_KEY`]), verified when it is read back: a damaged checkpoint is refused
//! instead of resumed (a flipped byte once became NaN weights, trained on until every tensor
//! was NaN). Non-finite values are never written.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype, TensorView};

use crate::atomic_write::write_atomic;
use crate::error::{Error, Result};

/// Metadata key of the checksum: `crc32:xxxxxxxx` over the tensors (by name: name, shape,
/// f32 bytes) and the other metadata entries (by key).
pub const CHECKSUM_KEY: &str = "checksum";

/// The checksum of named tensors (name, shape, little-endian f32 bytes) and metadata.
fn checksum<'a>(tensors: impl Iterator<Item = (&'a str, &'a [usize], &'a [u8])>, metadata: &HashMap<String, String>) -> String {
    let mut sorted: Vec<_> = tensors.collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = crc32fast::Hasher::new();
    for (name, dims, bytes) in sorted {
        h.update(name.as_bytes());
        h.update(&[0]);
        for d in dims {
            h.update(&(*d as u64).to_le_bytes());
        }
        h.update(bytes);
    }
    let mut keys: Vec<&String> = metadata.keys().filter(|k| *k != CHECKSUM_KEY).collect();
    keys.sort();
    for k in keys {
        h.update(k.as_bytes());
        h.update(&[0]);
        h.update(metadata[k].as_bytes());
        h.update(&[0]);
    }
    format!("crc32:{:08x}", h.finalize())
}

/// Serialises named tensors (stored as f32, on the CPU) with optional string metadata and the
/// checksum. A tensor holding NaN or an infinity is refused ([`Error::NonFiniteTensor`]), so that
/// a diverged run never overwrites good files.
pub fn tensors_to_bytes(tensors: &[(String, Tensor)], metadata: Option<HashMap<String, String>>) -> Result<Vec<u8>> {
    let mut raw = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let v = t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        if v.iter().any(|x| !x.is_finite()) {
            return Err(Error::NonFiniteTensor { name: name.clone() });
        }
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        raw.push((name.clone(), t.dims().to_vec(), bytes));
    }
    let mut metadata = metadata.unwrap_or_default();
    let sum = checksum(raw.iter().map(|(n, d, b)| (n.as_str(), d.as_slice(), b.as_slice())), &metadata);
    metadata.insert(CHECKSUM_KEY.to_string(), sum);
    let metadata = Some(metadata);
    let views = raw
        .iter()
        .map(|(n, shape, b)| {
            TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|source| Error::Safetensors { what: format!("tensor {n}"), source })
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, metadata)
        .map_err(|source| Error::Safetensors { what: "serialising tensors".into(), source })
}

/// [`tensors_to_bytes`] then [`write_atomic`].
pub fn save_tensors(path: &Path, tensors: &[(String, Tensor)], metadata: Option<HashMap<String, String>>) -> Result<()> {
    write_atomic(path, &tensors_to_bytes(tensors, metadata)?)
}

/// Whether a file read by [`load_tensors`] carried a checksum (files written before checksums
/// were added have none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    Verified,
    Absent,
}

/// A tensor file read back by [`read_tensor_file`].
pub struct TensorFile {
    pub tensors: HashMap<String, Tensor>,
    /// Without the checksum entry.
    pub metadata: HashMap<String, String>,
    pub checksum: Checksum,
}

/// Reads a safetensors file onto the CPU with its metadata (empty when it has none), verifying
/// its checksum when it has one: a mismatch is an [`Error::Checkpoint`] saying the file was
/// damaged. The checksum entry itself is left out of the metadata returned.
pub fn load_tensors(path: &Path) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    read_tensor_file(path).map(|f| (f.tensors, f.metadata))
}

/// [`load_tensors`], also saying whether there was a checksum to verify.
pub fn read_tensor_file(path: &Path) -> Result<TensorFile> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |reason: String| Error::Checkpoint { path: path.to_path_buf(), reason };
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut metadata = header.metadata().clone().unwrap_or_default();
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| bad(e.to_string()))?;
    let Some(stored) = metadata.remove(CHECKSUM_KEY) else { return Ok(TensorFile { tensors, metadata, checksum: Checksum::Absent }) };
    let mut raw = Vec::with_capacity(tensors.len());
    for (name, t) in &tensors {
        if t.dtype() != DType::F32 {
            return Err(bad(format!("tensor {name} is {:?}; this file holds f32 only (damaged?)", t.dtype())));
        }
        let bytes: Vec<u8> = t.flatten_all()?.to_vec1::<f32>()?.iter().flat_map(|x| x.to_le_bytes()).collect();
        raw.push((name.as_str(), t.dims(), bytes));
    }
    let computed = checksum(raw.iter().map(|(n, d, b)| (*n, *d, b.as_slice())), &metadata);
    if computed != stored {
        return Err(bad(format!(
            "checksum mismatch (stored {stored}, computed {computed}): the file was damaged or changed after it was written"
        )));
    }
    Ok(TensorFile { tensors, metadata, checksum: Checksum::Verified })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_metadata_and_no_leftovers() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("lightunet-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join("c.safetensors");
        let t = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu)?;
        let meta = HashMap::from([("state".to_string(), "{\"epoch\":3}".to_string())]);
        save_tensors(&path, &[("a.b".into(), t.clone())], Some(meta.clone()))?;
        save_tensors(&path, &[("a.b".into(), t)], Some(meta.clone()))?;
        let f = read_tensor_file(&path)?;
        assert_eq!(f.tensors["a.b"].to_vec2::<f32>()?, vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
        assert_eq!(f.metadata, meta);
        assert_eq!(f.checksum, Checksum::Verified);
        let left: Vec<_> = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?.collect();
        assert_eq!(left.len(), 1, "temporary files left behind");
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    /// Any changed byte of the tensor data or of the metadata is found on reading; a file without
    /// a checksum still reads (and says so); NaN is never written.
    #[test]
    fn damage_is_found_and_nan_never_written() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("lightunet-ckpt-sum-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join("c.safetensors");
        let t = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu)?;
        let meta = HashMap::from([("state".to_string(), "{\"epoch\":3}".to_string())]);
        save_tensors(&path, &[("a.b".into(), t.clone())], Some(meta.clone()))?;
        let good = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        // The last 16 bytes are the tensor's data: flip one bit of each in turn.
        for at in good.len() - 16..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            std::fs::write(&path, &bad).map_err(|e| Error::io(&path, e))?;
            let err = load_tensors(&path).unwrap_err().to_string();
            assert!(err.contains("checksum mismatch"), "byte {at}: {err}");
        }
        // The metadata: `3` -> `4` in the state (the header is JSON, the state a string in it).
        let needle = b"\\\"epoch\\\":3";
        let at = good.windows(needle.len()).position(|w| w == needle).expect("the state is in the header") + needle.len() - 1;
        let mut bad = good.clone();
        bad[at] = b'4';
        std::fs::write(&path, &bad).map_err(|e| Error::io(&path, e))?;
        let err = load_tensors(&path).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");

        // A file written without one (before checksums) reads, and says it was not verified.
        let views = vec![("a.b", TensorView::new(Dtype::F32, vec![1], &[0, 0, 128, 63]).unwrap())];
        let plain = safetensors::serialize(views, None).unwrap();
        std::fs::write(&path, plain).map_err(|e| Error::io(&path, e))?;
        let f = read_tensor_file(&path)?;
        assert_eq!((f.tensors["a.b"].to_vec1::<f32>()?, f.checksum), (vec![1.0], Checksum::Absent));

        let nan = Tensor::new(&[1f32, f32::NAN], &Device::Cpu)?;
        std::fs::write(&path, &good).map_err(|e| Error::io(&path, e))?;
        let err = save_tensors(&path, &[("w".into(), nan)], None).unwrap_err();
        assert!(matches!(&err, Error::NonFiniteTensor { name } if name == "w"), "{err}");
        assert_eq!(std::fs::read(&path).map_err(|e| Error::io(&path, e))?, good, "the file already there is kept");
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
