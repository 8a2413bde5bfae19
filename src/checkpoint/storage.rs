//! Tensor materialisation: one tensor from the bytes of its storage, honouring the storage
//! offset, strides, byte order and dtype. Pure byte work; the archive reads the storages.

use candle_core::pickle::TensorInfo;
use candle_core::{DType, Device, Tensor};

use super::limits::{Budget, Reason};

/// Reads one tensor from its storage's bytes, honouring the storage offset and strides. Its bytes
/// are taken from `budget` before anything is allocated (a strided view may stand for far more
/// than its storage holds).
pub(super) fn load_tensor(storage: &[u8], info: &TensorInfo, big_endian: bool, budget: &mut Budget) -> Reason<Tensor> {
    let elem = info.dtype.size_in_bytes();
    let dims = info.layout.dims();
    let strides = info.layout.stride();
    // candle's layout keeps the storage offset in bytes.
    let start = info.layout.start_offset();
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or("shape overflows")?;
    let bytes = if count == 0 {
        Vec::new()
    } else {
        let last = dims
            .iter()
            .zip(strides)
            .try_fold(0usize, |acc, (&d, &s)| {
                (d - 1).checked_mul(s)?.checked_add(acc)
            })
            .ok_or("strides overflow")?;
        let end = last
            .checked_add(1)
            .and_then(|n| n.checked_mul(elem))
            .and_then(|n| n.checked_add(start))
            .ok_or("strides overflow")?;
        if end > storage.len() {
            return Err(format!(
                "shape {dims:?} at offset {start} needs {end} bytes of storage `{}`, which has {}",
                info.path,
                storage.len()
            ));
        }
        let bytes = count.checked_mul(elem).ok_or("shape overflows")?;
        budget.take(bytes, &format!("shape {dims:?} with strides {strides:?}"))?;
        gather(storage, start, dims, strides, elem)
    };
    decode(&bytes, info.dtype, dims, big_endian)
}

/// Copies a (possibly strided) view of `storage` into row-major order. Checkpoints are almost
/// always contiguous; transposed or expanded tensors take the element-by-element path.
fn gather(storage: &[u8], start: usize, dims: &[usize], strides: &[usize], elem: usize) -> Vec<u8> {
    let count: usize = dims.iter().product();
    let contiguous = {
        let mut expected = 1;
        dims.iter().zip(strides).rev().all(|(&d, &s)| {
            let ok = d == 1 || s == expected;
            expected *= d;
            ok
        })
    };
    if contiguous {
        return storage[start..start + count * elem].to_vec();
    }
    let mut out = Vec::with_capacity(count * elem);
    let mut index = vec![0usize; dims.len()];
    for _ in 0..count {
        let offset = start + index.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>() * elem;
        out.extend_from_slice(&storage[offset..offset + elem]);
        // Row-major increment of the multi-index.
        for axis in (0..dims.len()).rev() {
            index[axis] += 1;
            if index[axis] < dims[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    out
}

/// Little-endian words of `N` bytes (byte-swapped first for big-endian files).
fn words<const N: usize>(bytes: &[u8], big_endian: bool) -> impl Iterator<Item = [u8; N]> + '_ {
    bytes.chunks_exact(N).map(move |chunk| {
        let mut word = [0u8; N];
        word.copy_from_slice(chunk);
        if big_endian {
            word.reverse();
        }
        word
    })
}

/// Row-major bytes of `dtype` (in the file's byte order) as a CPU tensor of shape `dims`.
fn decode(bytes: &[u8], dtype: DType, dims: &[usize], big_endian: bool) -> Reason<Tensor> {
    let cpu = &Device::Cpu;
    let tensor = match dtype {
        DType::F32 => Tensor::from_vec(
            words(bytes, big_endian).map(f32::from_le_bytes).collect(),
            dims,
            cpu,
        ),
        DType::F16 => Tensor::from_vec(
            words(bytes, big_endian)
                .map(half::f16::from_le_bytes)
                .collect(),
            dims,
            cpu,
        ),
        DType::BF16 => Tensor::from_vec(
            words(bytes, big_endian)
                .map(half::bf16::from_le_bytes)
                .collect(),
            dims,
            cpu,
        ),
        DType::F64 => Tensor::from_vec(
            words(bytes, big_endian).map(f64::from_le_bytes).collect(),
            dims,
            cpu,
        ),
        DType::I64 => Tensor::from_vec(
            words(bytes, big_endian).map(i64::from_le_bytes).collect(),
            dims,
            cpu,
        ),
        DType::U8 => Tensor::from_vec(bytes.to_vec(), dims, cpu),
        other => return Err(format!("unsupported dtype {other:?}")),
    };
    tensor.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn honours_offsets_and_strides() {
        // A 2x3 f32 view starting at element 1 with strides (1, 2) of a 7-element storage:
        // element [i][j] = storage[1 + i + 2j].
        let storage: Vec<u8> = (0..7).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let bytes = gather(&storage, 4, &[2, 3], &[1, 2], 4);
        let tensor = decode(&bytes, DType::F32, &[2, 3], false).unwrap();
        assert_eq!(
            tensor.to_vec2::<f32>().unwrap(),
            vec![vec![1., 3., 5.], vec![2., 4., 6.]]
        );
        // Big-endian storage decodes to the same values.
        let be: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let tensor = decode(&be, DType::F32, &[2], true).unwrap();
        assert_eq!(tensor.to_vec1::<f32>().unwrap(), vec![1.5, -2.0]);
    }
}
