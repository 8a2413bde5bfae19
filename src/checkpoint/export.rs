//! Tensors as safetensors views (little-endian bytes in safetensors' dtype), for
//! `save_safetensors`.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// A tensor's little-endian bytes with safetensors' dtype. (candle's own safetensors writer goes
/// through a newer `safetensors` than this crate's, whose `View` trait is a different one, and it
/// creates owner-only files.)
pub(super) struct RawTensor {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl RawTensor {
    pub(super) fn new(tensor: &Tensor) -> Result<Self> {
        use safetensors::Dtype as St;
        fn le<T: candle_core::WithDType, const N: usize>(
            flat: &Tensor,
            bytes: fn(T) -> [u8; N],
        ) -> Result<Vec<u8>> {
            Ok(flat.to_vec1::<T>()?.into_iter().flat_map(bytes).collect())
        }
        let flat = tensor.flatten_all()?;
        let (dtype, data) = match tensor.dtype() {
            DType::F32 => (St::F32, le(&flat, f32::to_le_bytes)?),
            DType::F16 => (St::F16, le(&flat, half::f16::to_le_bytes)?),
            DType::BF16 => (St::BF16, le(&flat, half::bf16::to_le_bytes)?),
            DType::F64 => (St::F64, le(&flat, f64::to_le_bytes)?),
            DType::I64 => (St::I64, le(&flat, i64::to_le_bytes)?),
            DType::U8 => (St::U8, flat.to_vec1::<u8>()?),
            other => return Err(Error::UnsupportedDType(other)),
        };
        Ok(Self {
            dtype,
            shape: tensor.dims().to_vec(),
            data,
        })
    }
}

impl safetensors::View for &RawTensor {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}
