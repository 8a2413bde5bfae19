//! Test helpers shared by the reader's parts: the PyTorch fixtures, their archive members, and
//! archives rebuilt from (altered) members.

use std::io::{Cursor, Read, Write};
use std::path::Path;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/torch");

pub(super) fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(FIXTURES).join(name)).unwrap()
}

/// The `data.pkl` of a fixture, and the archive's other members.
pub(super) fn members(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut zip = zip::ZipArchive::new(Cursor::new(archive)).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut entry = zip.by_index(i).unwrap();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            (entry.name().unwrap().to_string(), data)
        })
        .collect()
}

pub(super) fn zip_of(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in members {
        zip.start_file(name.as_str(), options).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

pub(super) fn pickle_of(archive: &[u8]) -> Vec<u8> {
    members(archive)
        .into_iter()
        .find(|(n, _)| n.ends_with("data.pkl"))
        .unwrap()
        .1
}

/// A `.pth` archive, built by hand, holding one f32 tensor `x` that is a view of `sizes` and
/// `strides` on a storage of `numel` zeros: what `torch.save({'x': t}, ...)` writes for
/// `t = torch.zeros(numel).as_strided(sizes, strides)` (e.g. `torch.zeros(1).expand(1 << 20,
/// 1 << 20)`: sizes `[1 << 20, 1 << 20]`, strides `[0, 0]`). Pickle protocol 2, as PyTorch writes it.
pub(super) fn strided_view_pth(numel: u32, sizes: &[u32], strides: &[u32]) -> Vec<u8> {
    fn text(out: &mut Vec<u8>, s: &str) {
        out.push(b'X'); // BINUNICODE
        out.extend((s.len() as u32).to_le_bytes());
        out.extend(s.as_bytes());
    }
    fn tuple_of_ints(out: &mut Vec<u8>, values: &[u32]) {
        out.push(b'('); // MARK
        for v in values {
            out.push(b'J'); // BININT
            out.extend(v.to_le_bytes());
        }
        out.push(b't'); // TUPLE
    }
    let mut pkl = vec![0x80, 0x02, b'}']; // PROTO 2, EMPTY_DICT
    text(&mut pkl, "x");
    pkl.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    // The storage: persistent id ("storage", FloatStorage, key, location, numel).
    pkl.push(b'(');
    text(&mut pkl, "storage");
    pkl.extend(b"ctorch\nFloatStorage\n");
    text(&mut pkl, "0");
    text(&mut pkl, "cpu");
    pkl.push(b'J');
    pkl.extend(numel.to_le_bytes());
    pkl.extend(b"tQ"); // TUPLE, BINPERSID
    pkl.extend([b'K', 0]); // storage offset 0
    tuple_of_ints(&mut pkl, sizes);
    tuple_of_ints(&mut pkl, strides);
    pkl.push(0x89); // NEWFALSE: requires_grad
    pkl.extend(b"ccollections\nOrderedDict\n)R"); // backward hooks: OrderedDict()
    pkl.extend(b"tRs."); // TUPLE, REDUCE, SETITEM, STOP
    zip_of(&[
        ("e/data.pkl".into(), pkl),
        ("e/byteorder".into(), b"little".to_vec()),
        ("e/data/0".into(), vec![0u8; numel as usize * 4]),
    ])
}
