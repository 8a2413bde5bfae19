//! PyTorch `.pth` import without Python: whole pickled models (`torch.save(model)`), plain state
//! dicts (f32 or f16) and dicts wrapping one, read into tensors named like PyTorch's `state_dict`;
//! variant detection from those names and shapes; safetensors export.
//!
//! A `.pth` file is a zip holding `<name>/data.pkl` (the pickled object graph) and one
//! `<name>/data/<key>` file per tensor storage. The pickle is decoded with candle's reader
//! ([`candle_core::pickle`]), which builds a tree of [`Object`](candle_core::pickle::Object)s and
//! never runs any code; this module walks that tree (nested `nn.Module`s or a dict) and reads the
//! storages it points at. The reader's parts, in the order a file goes through them:
//!
//! - `archive`: the zip walk (format checks, `data.pkl`, byte order, storage reads);
//! - `pickle`: the bounded pickle machine (a prescan, then candle's reader);
//! - `records`: the tensor records in the decoded tree, checked and located;
//! - `storage`: a tensor from its storage's bytes (offset, strides, byte order, dtype);
//! - `limits`: the bounds they share; `export`: tensors as safetensors views.

mod archive;
mod export;
#[cfg(test)]
mod fixtures;
mod limits;
mod pickle;
mod records;
mod storage;

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::model::Variant;

use archive::read_archive;
use export::RawTensor;

/// Reads the tensors of a PyTorch checkpoint, named as PyTorch's `state_dict` would name them.
///
/// Accepts a whole pickled model (`torch.save(model)`), a state dict
/// (`torch.save(model.state_dict())`), or a dict holding either under `state_dict`,
/// `model_state_dict` or `model`. Tensors are on the CPU in their stored dtype (f32, f16, bf16,
/// f64, i64 or u8), in state-dict order. Never runs Python and never panics on a damaged file: every
/// failure is an [`Error::Checkpoint`] naming the file.
pub fn read_pth(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let fail = |reason: String| Error::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    read_archive(&bytes).map_err(fail)
}

/// `(name, shape)` of every tensor, the input of [`detect_variant`].
pub fn shapes(tensors: &[(String, Tensor)]) -> Vec<(String, Vec<usize>)> {
    tensors
        .iter()
        .map(|(name, t)| (name.clone(), t.dims().to_vec()))
        .collect()
}

/// Number of trainable parameters (weights and biases of convs and BatchNorm gamma/beta, not
/// running statistics), the count the paper's table uses.
pub fn parameter_count(shapes: &[(String, Vec<usize>)]) -> usize {
    shapes
        .iter()
        .filter(|(name, _)| name.ends_with(".weight") || name.ends_with(".bias"))
        .map(|(_, shape)| shape.iter().product::<usize>())
        .sum()
}

/// Tells which member of the family a set of PyTorch weights belongs to, from names and shapes
/// ([`crate::model::detect_variant`], which knows the architecture).
pub fn detect_variant(shapes: &[(String, Vec<usize>)]) -> Result<Variant> {
    crate::model::detect_variant(shapes)
}

/// Writes tensors under their (PyTorch) names as a safetensors file, atomically: the data goes to
/// a temporary file next to `path`, which is synced and then renamed over it, so a crash or a full
/// disk never leaves a half-written weights file under the final name.
pub fn save_safetensors(tensors: &[(String, Tensor)], path: &Path) -> Result<()> {
    let fail = |why: String| Error::Write { path: path.to_path_buf(), reason: why };
    let mut seen = HashSet::new();
    let mut raw = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        if !seen.insert(name.as_str()) {
            return Err(fail(format!("tensor `{name}` given twice")));
        }
        raw.push((name.as_str(), RawTensor::new(tensor)?));
    }
    let bytes = safetensors::serialize(raw.iter().map(|(n, t)| (*n, t)), None)
        .map_err(|e| fail(e.to_string()))?;

    let file_name = path
        .file_name()
        .ok_or_else(|| fail("not a file name".into()))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let written = std::fs::File::create(&tmp)
        .and_then(|mut file| {
            file.write_all(&bytes)?;
            file.sync_all()
        })
        .map_err(|e| Error::io(&tmp, e))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if written.is_err() {
        // Best effort: the error being returned matters more than a leftover temporary file.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use candle_core::pickle::{Object, Stack};
    use candle_core::{DType, Device};

    use super::fixtures::{fixture, members, pickle_of, zip_of};
    use super::pickle::{parse_pickle, prescan};
    use super::records::{check_record, tensor_info, tensor_records};
    use super::*;

    fn shapes_of(entries: &[(&str, &[usize])]) -> Vec<(String, Vec<usize>)> {
        entries
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_vec()))
            .collect()
    }

    #[test]
    fn detects_unet() {
        let shapes = shapes_of(&[
            ("inc.double_conv.0.weight", &[64, 3, 3, 3]),
            ("inc.double_conv.3.weight", &[64, 64, 3, 3]),
        ]);
        assert_eq!(detect_variant(&shapes).unwrap(), Variant::UNet);
    }

    #[test]
    fn detects_light() {
        let shapes = shapes_of(&[
            ("inc.double_conv.0.weight", &[64, 3, 3, 3]),
            ("inc.double_conv.3.conv.0.weight", &[64, 1, 3, 3]),
            ("inc.double_conv.3.conv.1.weight", &[64, 64, 1, 1]),
        ]);
        assert_eq!(detect_variant(&shapes).unwrap(), Variant::Light);
    }

    #[test]
    fn detects_lighter_at_each_c() {
        for c in [1usize, 2, 4, 8, 16, 32, 64, 128] {
            let shapes = shapes_of(&[
                (
                    "inc.double_conv.0.conv.0.weight",
                    &[3, if c == 1 { 1 } else { 3 }, 3, 3],
                ),
                (
                    "down4.maxpool_conv.1.double_conv.0.conv.0.weight",
                    &[512, c, 3, 3],
                ),
            ]);
            assert_eq!(detect_variant(&shapes).unwrap(), Variant::Lighter(c as u32));
        }
    }

    #[test]
    fn rejects_unknown_layouts_saying_what_it_found() {
        let err = detect_variant(&shapes_of(&[("fc.weight", &[10, 20])]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("fc.weight") && err.contains("1 tensors"),
            "{err}"
        );

        let err = detect_variant(&[]).unwrap_err().to_string();
        assert!(err.contains("no tensors"), "{err}");

        let err = detect_variant(&shapes_of(&[
            ("inc.double_conv.0.conv.0.weight", &[3, 3, 3, 3]),
            (
                "down4.maxpool_conv.1.double_conv.0.conv.0.weight",
                &[512, 3, 3, 3],
            ),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("3 channels per group"), "{err}");

        let err = detect_variant(&shapes_of(&[(
            "inc.double_conv.0.conv.0.weight",
            &[3, 3, 3, 3],
        )]))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("down4.maxpool_conv.1.double_conv.0.conv.0.weight"),
            "{err}"
        );

        let err = detect_variant(&shapes_of(&[("inc.double_conv.0.weight", &[64, 3, 3, 3])]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("conv set 2"), "{err}");
    }

    #[test]
    fn counts_parameters_without_running_statistics() {
        let shapes = shapes_of(&[
            ("a.weight", &[4, 2, 3, 3]),
            ("a.bias", &[4]),
            ("bn.running_mean", &[4]),
            ("bn.running_var", &[4]),
            ("bn.num_batches_tracked", &[]),
        ]);
        assert_eq!(parameter_count(&shapes), 76);
    }

    /// Deterministic pseudo-random numbers for fuzzing (xorshift64).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| (self.next() >> 24) as u8).collect()
        }
    }

    /// The prescan, then candle's reader and record decoding with no `catch_unwind`: a panic here
    /// fails the test, so the tests see what the guard in `parse_pickle` would hide.
    fn parse_unguarded(pkl: &[u8]) {
        if prescan(pkl).is_err() {
            return;
        }
        let mut stack = Stack::empty();
        if stack.read_loop(&mut Cursor::new(pkl)).is_err() {
            return;
        }
        let Ok(root) = stack.finalize() else { return };
        if let Ok(records) = tensor_records(root) {
            for (name, record) in records {
                if check_record(&record).is_ok() {
                    let _ = record.into_tensor_info(Object::Unicode(name), Path::new("x/data"));
                }
            }
        }
    }

    #[test]
    fn reads_both_fixtures_with_state_dict_names() {
        for (file, dtype) in [
            ("lighter_at1.whole-model.pth", DType::F32),
            ("lighter_at1.state-dict-f16.pth", DType::F16),
        ] {
            let tensors = read_archive(&fixture(file)).unwrap();
            assert_eq!(tensors.len(), 164, "{file}");
            let (name, first) = &tensors[0];
            assert_eq!(name, "inc.double_conv.0.conv.0.weight");
            assert_eq!(first.dims(), &[3, 1, 3, 3]);
            assert_eq!(first.dtype(), dtype);
            let get = |n: &str| &tensors.iter().find(|(k, _)| k == n).unwrap().1;
            assert_eq!(
                get("inc.double_conv.1.num_batches_tracked").dtype(),
                DType::I64
            );
            assert_eq!(get("outc.conv.weight").dims(), &[1, 64, 1, 1]);
            let shapes = shapes(&tensors);
            assert_eq!(detect_variant(&shapes).unwrap(), Variant::Lighter(1));
            assert_eq!(parameter_count(&shapes), 1_983_583);
        }
    }

    #[test]
    fn whole_model_matches_reference_weights_exactly() {
        let reference = candle_core::safetensors::load(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/parity/lighter_at1.weights.safetensors"
            ),
            &Device::Cpu,
        )
        .unwrap();
        for file in [
            "lighter_at1.whole-model.pth",
            "lighter_at1.state-dict-f16.pth",
        ] {
            let tensors = read_archive(&fixture(file)).unwrap();
            assert_eq!(tensors.len(), reference.len());
            for (name, tensor) in &tensors {
                let want = &reference[name];
                assert_eq!(tensor.dims(), want.dims(), "{name}");
                let diff = tensor
                    .to_dtype(DType::F64)
                    .unwrap()
                    .sub(&want.to_dtype(DType::F64).unwrap())
                    .unwrap()
                    .abs()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap_or(0.0);
                // The f16 fixture holds the same (f16-representable) values.
                assert_eq!(diff, 0.0, "{file}: {name}");
            }
        }
    }

    #[test]
    fn random_bytes_are_an_error() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..300 {
            let len = 1 + (rng.next() % 4096) as usize;
            let bytes = rng.bytes(len);
            assert!(read_archive(&bytes).is_err());
            // Random opcodes behind a valid pickle header, too.
            let mut pkl = vec![0x80, 0x02];
            pkl.extend(rng.bytes(16 + round));
            parse_unguarded(&pkl);
        }
    }

    /// Overwrites bytes of a real `data.pkl`: whatever passes the prescan must not make candle's
    /// reader panic, and the whole import fails or succeeds cleanly.
    #[test]
    fn corrupted_pickles_never_panic() {
        let archive = fixture("lighter_at1.whole-model.pth");
        let original = members(&archive);
        let pkl = pickle_of(&archive);
        let mut rng = Rng(42);
        for trial in 0..1500 {
            let mut bad = pkl.clone();
            for _ in 0..1 + trial % 3 {
                let at = (rng.next() % bad.len() as u64) as usize;
                bad[at] = rng.next() as u8;
            }
            parse_unguarded(&bad);
            if trial % 50 == 0 {
                let rebuilt: Vec<_> = original
                    .iter()
                    .map(|(n, d)| {
                        (
                            n.clone(),
                            if n.ends_with("data.pkl") {
                                bad.clone()
                            } else {
                                d.clone()
                            },
                        )
                    })
                    .collect();
                let _ = read_archive(&zip_of(&rebuilt));
            }
        }
    }

    #[test]
    fn hostile_pickles_are_refused_before_parsing() {
        // A LONG1 of 64 bytes: candle's shift overflows (a panic in debug builds).
        let mut long = vec![0x80, 0x02, 0x8a, 64];
        long.extend([0xff; 64]);
        long.push(b'.');
        assert!(parse_pickle(&long).unwrap_err().contains("64-byte integer"));

        // 100k nested tuples: dropping candle's recursive object would overflow the stack.
        let mut deep = vec![0x80, 0x02, b'N'];
        deep.extend(std::iter::repeat_n(0x85, 100_000));
        deep.push(b'.');
        assert!(parse_pickle(&deep).unwrap_err().contains("nested deeper"));

        // Doubling through the memo: 2^64 objects from a few hundred bytes.
        let mut bomb = vec![0x80, 0x02, b'N', b'q', 0];
        for _ in 0..64 {
            bomb.extend([b'h', 0, b'h', 0, 0x86, b'q', 0]);
        }
        bomb.push(b'.');
        assert!(parse_pickle(&bomb).unwrap_err().contains("more than"));

        // Tensor records too short for candle's `Vec::remove` calls.
        let short = Object::Reduce {
            callable: Box::new(Object::Class {
                module_name: "torch._utils".into(),
                class_name: "_rebuild_parameter".into(),
            }),
            args: Box::new(Object::Tuple(vec![])),
        };
        assert!(tensor_info(short, "w", Path::new("x/data"))
            .unwrap_err()
            .contains("malformed"));
    }

    #[test]
    fn reads_wrapped_state_dicts() {
        // {"epoch": 3, "state_dict": <the f16 fixture's dict>}: splice the fixture's pickle in.
        let archive = fixture("lighter_at1.state-dict-f16.pth");
        let pkl = pickle_of(&archive);
        assert_eq!(&pkl[..3], b"\x80\x02}");
        let mut wrapped =
            b"\x80\x02}(X\x05\x00\x00\x00epochK\x03X\x0a\x00\x00\x00state_dict".to_vec();
        // The inner pickle minus PROTO and STOP; its memo indices stay unique as the outer pickle
        // memoizes nothing.
        wrapped.extend(&pkl[2..pkl.len() - 1]);
        wrapped.extend(b"u.");
        let rebuilt: Vec<_> = members(&archive)
            .into_iter()
            .map(|(n, d)| {
                if n.ends_with("data.pkl") {
                    (n, wrapped.clone())
                } else {
                    (n, d)
                }
            })
            .collect();
        let tensors = read_archive(&zip_of(&rebuilt)).unwrap();
        assert_eq!(tensors.len(), 164);
        assert_eq!(tensors[0].0, "inc.double_conv.0.conv.0.weight");
    }

    #[test]
    fn saves_atomically_and_round_trips() {
        let dir = std::env::temp_dir().join(format!("lightunet-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.safetensors");
        let tensors = vec![
            (
                "a.weight".to_string(),
                Tensor::new(&[1f32, 2., 3.], &Device::Cpu).unwrap(),
            ),
            (
                "a.num_batches_tracked".to_string(),
                Tensor::new(7i64, &Device::Cpu).unwrap(),
            ),
        ];
        save_safetensors(&tensors, &path).unwrap();
        let back = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        assert_eq!(back["a.weight"].to_vec1::<f32>().unwrap(), vec![1., 2., 3.]);
        assert_eq!(back["a.num_batches_tracked"].to_scalar::<i64>().unwrap(), 7);
        // Only the final file is left behind.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("w.safetensors")]);
        let twice = vec![tensors[0].clone(), tensors[0].clone()];
        assert!(save_safetensors(&twice, &dir.join("x.safetensors")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
