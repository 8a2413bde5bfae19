//! The zip walk: tells a PyTorch archive from other files (legacy PyTorch, safetensors), finds
//! its `data.pkl` and byte order, and reads the storages the tensor records point at, in
//! state-dict order. Every read of the archive happens here.

use std::collections::{HashMap, HashSet};
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use candle_core::pickle::{Object, TensorInfo};
use candle_core::Tensor;

use super::limits::{Budget, Reason, MAX_PICKLE_BYTES};
use super::pickle::parse_pickle;
use super::records::{describe, tensor_info, tensor_records};
use super::storage::load_tensor;

/// PyTorch's pre-1.6 (non-zip) format starts with the pickled magic number 0x1950a86a20f9469cfc6c.
const LEGACY_MAGIC: [u8; 14] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
];

/// The tensors of a `.pth` file's bytes, named and ordered as PyTorch's `state_dict` would.
pub(super) fn read_archive(bytes: &[u8]) -> Reason<Vec<(String, Tensor)>> {
    check_format(bytes)?;
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| format!("truncated or damaged zip archive ({e})"))?;

    let pkl_name = data_pkl_name(&zip)?;
    let prefix = pkl_name
        .strip_suffix("data.pkl")
        .unwrap_or_default()
        .to_string();
    let pkl = read_entry(&mut zip, &pkl_name, MAX_PICKLE_BYTES)?;
    if pkl.len() > MAX_PICKLE_BYTES {
        return Err(format!(
            "`{pkl_name}` is larger than {MAX_PICKLE_BYTES} bytes"
        ));
    }
    let big_endian = big_endian(&mut zip, &prefix)?;

    let root = parse_pickle(&pkl).map_err(|e| format!("`{pkl_name}`: {e}"))?;
    let what = describe(&root);
    let records = tensor_records(root)?;
    if records.is_empty() {
        return Err(format!(
            "no tensors found in `{pkl_name}` (it holds {what})"
        ));
    }
    let infos = tensor_infos(records, &PathBuf::from(format!("{prefix}data")))?;

    let mut storages = HashMap::new();
    // Storages and tensors each get the file's size plus a margin (see `Budget`).
    let (mut storage_budget, mut tensor_budget) = (Budget::for_file(bytes.len()), Budget::for_file(bytes.len()));
    infos
        .into_iter()
        .map(|(name, info)| {
            let tensor = read_storage(&mut zip, &info, &mut storages, &mut storage_budget)
                .and_then(|storage| load_tensor(storage, &info, big_endian, &mut tensor_budget))
                .map_err(|e| format!("tensor `{name}`: {e}"))?;
            Ok((name, tensor))
        })
        .collect()
}

/// Refuses what is not a zip archive, naming the formats most often mistaken for one.
fn check_format(bytes: &[u8]) -> Reason<()> {
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    if bytes.starts_with(&LEGACY_MAGIC) {
        return Err("legacy PyTorch format (saved before PyTorch 1.6 or with \
                    _use_new_zipfile_serialization=False), which is not supported; re-save it \
                    with a recent PyTorch"
            .into());
    }
    if !bytes.starts_with(b"PK") {
        // A safetensors file starts with its header's length, then the JSON header.
        let safetensors = bytes.get(8) == Some(&b'{');
        return Err(format!(
            "not a PyTorch checkpoint (no zip archive){}",
            if safetensors {
                "; it looks like a safetensors file, which needs no conversion"
            } else {
                ""
            }
        ));
    }
    Ok(())
}

/// Each record's storage, dtype and layout, names checked unique, in state-dict order.
fn tensor_infos(
    records: Vec<(String, Object)>,
    storage_dir: &Path,
) -> Reason<Vec<(String, TensorInfo)>> {
    let mut seen = HashSet::new();
    let mut infos = Vec::with_capacity(records.len());
    for (name, record) in records {
        if !seen.insert(name.clone()) {
            return Err(format!("tensor `{name}` appears twice"));
        }
        let info =
            tensor_info(record, &name, storage_dir).map_err(|e| format!("tensor `{name}`: {e}"))?;
        infos.push((name, info));
    }
    // candle's reader reverses the items of each SETITEMS batch, so dict order is lost. PyTorch
    // numbers storages in the order it pickles them, which is state-dict order: sort by that.
    infos.sort_by_key(|(_, info)| {
        let key = info
            .path
            .rsplit('/')
            .next()
            .and_then(|key| key.parse::<u64>().ok());
        (key.is_none(), key, info.layout.start_offset())
    });
    Ok(infos)
}

/// The archive's one `data.pkl`, at the top or under the single folder PyTorch writes.
fn data_pkl_name(zip: &zip::ZipArchive<Cursor<&[u8]>>) -> Reason<String> {
    let mut names = zip
        .file_names()
        .filter_map(|name| name.ok())
        .filter(|name| *name == "data.pkl" || name.ends_with("/data.pkl"))
        .map(|name| name.into_owned());
    match (names.next(), names.next()) {
        (Some(name), None) => Ok(name),
        (Some(a), Some(b)) => Err(format!(
            "several pickles (`{a}`, `{b}`, ...) in one archive"
        )),
        (None, _) => Err("zip archive without data.pkl (not a PyTorch checkpoint)".into()),
    }
}

/// Reads up to `limit + 1` bytes of one archive member: reading past the end makes the zip
/// reader check the CRC, and one byte over tells the caller the member is longer than expected.
fn read_entry(
    zip: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &str,
    limit: usize,
) -> Reason<Vec<u8>> {
    let entry = zip
        .by_name(name)
        .map_err(|e| format!("`{name}` missing from the archive ({e})"))?;
    let mut data = Vec::new();
    entry
        .take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot read `{name}` (truncated or damaged archive: {e})"))?;
    Ok(data)
}

/// PyTorch records the writer's byte order in `byteorder`; files written before it did are
/// little-endian.
fn big_endian(zip: &mut zip::ZipArchive<Cursor<&[u8]>>, prefix: &str) -> Reason<bool> {
    let name = format!("{prefix}byteorder");
    if zip.index_for_name(&name).is_none() {
        return Ok(false);
    }
    let order = read_entry(zip, &name, 16)?;
    match order.trim_ascii() {
        b"little" => Ok(false),
        b"big" => Ok(true),
        other => Err(format!(
            "unknown byte order `{}`",
            String::from_utf8_lossy(other)
        )),
    }
}

/// The bytes of the storage a tensor points at, exactly as many as the pickle says it holds;
/// read once and cached, as several tensors may share one. What is read is taken from `budget`
/// (a compressed member could inflate far beyond the file).
fn read_storage<'a>(
    zip: &mut zip::ZipArchive<Cursor<&[u8]>>,
    info: &TensorInfo,
    storages: &'a mut HashMap<String, Vec<u8>>,
    budget: &mut Budget,
) -> Reason<&'a [u8]> {
    let elem = info.dtype.size_in_bytes();
    let storage_bytes = info
        .storage_size
        .checked_mul(elem)
        .ok_or("storage size overflows")?;
    if !storages.contains_key(&info.path) {
        // Reads at most what is left of the budget (and one byte more, to tell it was exceeded).
        let mut data = read_entry(zip, &info.path, storage_bytes.min(budget.left()))?;
        budget.take(data.len().min(storage_bytes), &format!("storage `{}`", info.path))?;
        if data.len() < storage_bytes {
            return Err(format!(
                "storage `{}` holds {} bytes, the pickle says {storage_bytes}",
                info.path,
                data.len()
            ));
        }
        data.truncate(storage_bytes);
        storages.insert(info.path.clone(), data);
    }
    Ok(storages
        .get(&info.path)
        .map(Vec::as_slice)
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{fixture, strided_view_pth, zip_of};
    use super::*;

    #[test]
    fn clean_errors_for_non_checkpoints() {
        let cases: [(&[u8], &str); 6] = [
            (b"", "empty file"),
            (
                b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
                "looks like a safetensors file",
            ),
            (b"just some text\n", "no zip archive"),
            (&LEGACY_MAGIC, "legacy PyTorch format"),
            (b"PK\x03\x04 broken", "zip archive"),
            (&[0x80, 0x02, b'}', b'.'], "no zip archive"),
        ];
        for (bytes, want) in cases {
            let err = read_archive(bytes).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
        let no_pickle = zip_of(&[("x/readme.txt".into(), b"hello".to_vec())]);
        assert!(read_archive(&no_pickle)
            .unwrap_err()
            .contains("without data.pkl"));
        // A pickle of an empty dict: a checkpoint of nothing.
        let empty = zip_of(&[("x/data.pkl".into(), b"\x80\x02}q\x00.".to_vec())]);
        let err = read_archive(&empty).unwrap_err();
        assert!(err.contains("no tensors found"), "{err}");
    }

    #[test]
    fn every_truncation_is_an_error() {
        for file in [
            "lighter_at1.state-dict-f16.pth",
            "lighter_at1.whole-model.pth",
        ] {
            let bytes = fixture(file);
            for len in (0..bytes.len())
                .step_by(4093)
                .chain(bytes.len() - 64..bytes.len())
            {
                assert!(read_archive(&bytes[..len]).is_err(), "{file} cut at {len}");
            }
        }
    }

    /// `torch.zeros(1).expand(1 << 20, 1 << 20)` saved (1.6 KB) stands for 4 TiB of f32: refused
    /// with a reason before anything is allocated, where materialising it aborted the process.
    #[test]
    fn expanded_views_are_bounded_by_the_file() {
        let bomb = strided_view_pth(1, &[1 << 20, 1 << 20], &[0, 0]);
        assert!(bomb.len() < 2048, "{} bytes", bomb.len());
        let err = read_archive(&bomb).unwrap_err();
        assert!(err.contains("tensor `x`") && err.contains("4.0 TiB") && err.contains("more than a file of"), "{err}");

        // Many modest views add up: each tensor takes from one budget for the whole file.
        let wide = strided_view_pth(1 << 12, &[1 << 16, 1 << 12], &[0, 1]); // 1 GiB from 16 KiB
        let err = read_archive(&wide).unwrap_err();
        assert!(err.contains("needs 1.0 GiB"), "{err}");

        // Real views within the margin still load, values and all: a transposed 3x2 and an
        // expanded 1000x1000 (4 MB from one stored value).
        let transposed = strided_view_pth(6, &[3, 2], &[1, 3]);
        let t = read_archive(&transposed).unwrap();
        assert_eq!(t[0].1.dims(), &[3, 2]);
        let expanded = strided_view_pth(1, &[1000, 1000], &[0, 0]);
        let t = read_archive(&expanded).unwrap();
        assert_eq!(t[0].1.dims(), &[1000, 1000]);
    }
}
