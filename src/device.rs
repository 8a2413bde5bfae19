//! Device and dtype names as every subcommand takes them (`--device`, `--dtype`), parsed in one
//! place so that `train`, `predict`, `bench`, `check`, `process` and `live` accept the same
//! names and fail the same way.

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// `cpu`, `cuda`, `cuda:N` or `auto` (the GPU when one works, else the CPU; logs which).
///
/// CUDA names are refused with a message (not a panic) on a build without the `cuda` feature or
/// a machine without the driver: cudarc loads the driver lazily and panics when it is absent,
/// so the driver is probed first.
pub fn parse_device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "auto" => {
            let dev = if cuda_driver_present() { Device::new_cuda(0).ok() } else { None };
            match dev {
                Some(d) => {
                    tracing::info!("device: cuda:0");
                    Ok(d)
                }
                None => {
                    let why = if cfg!(feature = "cuda") { "no usable CUDA GPU" } else { "built without the cuda feature" };
                    tracing::info!("device: cpu ({why})");
                    Ok(Device::Cpu)
                }
            }
        }
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = match s.strip_prefix("cuda:") {
                None => 0,
                Some(n) => n.parse::<usize>().map_err(|_| Error::UnknownDevice(s.to_string()))?,
            };
            let unavailable = |reason: String| Error::DeviceUnavailable { device: s.to_string(), reason };
            if !cfg!(feature = "cuda") {
                return Err(unavailable("this binary was built without the `cuda` feature (see README, GPU)".into()));
            }
            if !cuda_driver_present() {
                return Err(unavailable("no CUDA driver (libcuda.so.1) found on this machine".into()));
            }
            Device::new_cuda(ordinal).map_err(|e| unavailable(e.to_string()))
        }
        other => Err(Error::UnknownDevice(other.to_string())),
    }
}

/// Whether the NVIDIA driver library can be loaded (always false without the `cuda` feature).
fn cuda_driver_present() -> bool {
    #[cfg(feature = "cuda")]
    {
        // SAFETY: loading the NVIDIA driver library runs its initialisers only, as cudarc would.
        ["libcuda.so.1", "libcuda.so"].iter().any(|n| unsafe { libloading::Library::new(n) }.is_ok())
    }
    #[cfg(not(feature = "cuda"))]
    {
        false
    }
}

/// `f32`, `f16` or `bf16`.
pub fn parse_dtype(name: &str) -> Result<DType> {
    match name {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        other => Err(Error::UnknownDtype(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(matches!(parse_device("gpu"), Err(Error::UnknownDevice(n)) if n == "gpu"));
        assert!(matches!(parse_device("cuda:x"), Err(Error::UnknownDevice(_))));
        // Never a panic, whatever the build and the machine: a device or a typed refusal.
        for name in ["cuda", "cuda:0", "auto"] {
            match parse_device(name) {
                Ok(_) | Err(Error::DeviceUnavailable { .. }) => {}
                Err(e) => panic!("{name}: {e}"),
            }
        }
        assert_eq!(parse_dtype("bf16").unwrap(), DType::BF16);
        assert!(matches!(parse_dtype("f64"), Err(Error::UnknownDtype(_))));
    }
}
