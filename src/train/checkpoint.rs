//! Tensor files a training run writes, atomically ([`crate::atomic_write`]). The resumable
//! checkpoint is a single safetensors file (weights, optimizer moments, and the run state as JSON
//! metadata), so its parts can never disagree.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype, TensorView};

use crate::atomic_write::write_atomic;
use crate::error::{Error, Result};

/// Serialises named tensors (stored as f32, on the CPU) with optional string metadata.
pub fn tensors_to_bytes(tensors: &[(String, Tensor)], metadata: Option<HashMap<String, String>>) -> Result<Vec<u8>> {
    let mut raw = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let v = t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        raw.push((name.clone(), t.dims().to_vec(), bytes));
    }
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

/// Reads a safetensors file onto the CPU with its metadata (empty when it has none).
pub fn load_tensors(path: &Path) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |reason: String| Error::Checkpoint { path: path.to_path_buf(), reason };
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| bad(e.to_string()))?;
    Ok((tensors, metadata))
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
        let (ts, m) = load_tensors(&path)?;
        assert_eq!(ts["a.b"].to_vec2::<f32>()?, vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
        assert_eq!(m, meta);
        let left: Vec<_> = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?.collect();
        assert_eq!(left.len(), 1, "temporary files left behind");
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
