//! PyTorch `.pth` import without Python: whole pickled models (`torch.save(model)`), plain state
//! dicts (f32 or f16) and dicts wrapping one, read into tensors named like PyTorch's `state_dict`;
//! variant detection from those names and shapes; safetensors export.
//!
//! A `.pth` file is a zip holding `<name>/data.pkl` (the pickled object graph) and one
//! `<name>/data/<key>` file per tensor storage. The pickle is decoded with candle's reader
//! ([`candle_core::pickle`]), which builds a tree of [`Object`]s and never runs any code; this
//! module walks that tree (nested `nn.Module`s or a dict) and reads the storages it points at.

use std::collections::{HashMap, HashSet};
use std::io::{Cursor, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use candle_core::pickle::{Object, Stack, TensorInfo};
use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::model::Variant;

/// Internal failures are plain reasons; [`read_pth`] attaches the path once, as
/// `Error::Checkpoint`, so every import failure reads the same way.
type Reason<T> = std::result::Result<T, String>;

/// PyTorch's pre-1.6 (non-zip) format starts with the pickled magic number 0x1950a86a20f9469cfc6c.
const LEGACY_MAGIC: [u8; 14] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
];

/// A model's `data.pkl` is tens of kilobytes; anything this large is not one.
const MAX_PICKLE_BYTES: usize = 256 << 20;

/// Deepest object nesting accepted in `data.pkl`. A whole Lighter U-net (five levels of modules,
/// then the tensor records) nests 31 to 40 levels; far deeper trees would overflow the stack when
/// candle's recursive `Object` is dropped, which aborts the process instead of returning an error.
const MAX_PICKLE_DEPTH: u32 = 256;

/// Most objects (created or cloned) candle's reader may build for one `data.pkl`. Its memo stores
/// and fetches deep copies, so a few hundred crafted bytes could otherwise ask for exponential
/// memory; real checkpoints need well under a million.
const MAX_PICKLE_NODES: u64 = 1 << 22;

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
    let fail = |why: String| Error::Msg(format!("cannot write {}: {why}", path.display()));
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

/// A tensor's little-endian bytes with safetensors' dtype. (candle's own safetensors writer goes
/// through a newer `safetensors` than this crate's, whose `View` trait is a different one, and it
/// creates owner-only files.)
struct RawTensor {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl RawTensor {
    fn new(tensor: &Tensor) -> Result<Self> {
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
            other => {
                return Err(Error::Msg(format!(
                    "cannot write {other:?} tensors to safetensors"
                )))
            }
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

fn read_archive(bytes: &[u8]) -> Reason<Vec<(String, Tensor)>> {
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

    let storage_dir = PathBuf::from(format!("{prefix}data"));
    let mut seen = HashSet::new();
    let mut infos = Vec::with_capacity(records.len());
    for (name, record) in records {
        if !seen.insert(name.clone()) {
            return Err(format!("tensor `{name}` appears twice"));
        }
        let info = tensor_info(record, &name, &storage_dir)
            .map_err(|e| format!("tensor `{name}`: {e}"))?;
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

    let mut storages = HashMap::new();
    infos
        .into_iter()
        .map(|(name, info)| {
            let tensor = load_tensor(&mut zip, &info, &mut storages, big_endian)
                .map_err(|e| format!("tensor `{name}`: {e}"))?;
            Ok((name, tensor))
        })
        .collect()
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

/// Decodes `data.pkl` with candle's reader after [`prescan`] has ruled out what would make that
/// reader panic or exhaust the process.
fn parse_pickle(pkl: &[u8]) -> Reason<Object> {
    prescan(pkl)?;
    // Backstop: candle's reader indexes and shifts without checks in places, and a panic there
    // must not take down a program that merely opened a bad file. The prescan should leave it
    // nothing to panic on; this turns anything it missed into an error.
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        let mut stack = Stack::empty();
        stack.read_loop(&mut Cursor::new(pkl))?;
        stack.finalize()
    }));
    match parsed {
        Ok(Ok(root)) => Ok(root),
        Ok(Err(e)) => Err(format!("damaged or unsupported pickle ({e})")),
        Err(_) => Err("damaged pickle (the pickle reader failed on it)".into()),
    }
}

/// What one value on the simulated pickle stack amounts to.
#[derive(Debug, Clone, Copy)]
struct Slot {
    mark: bool,
    depth: u32,
    nodes: u64,
}

impl Slot {
    const LEAF: Slot = Slot {
        mark: false,
        depth: 1,
        nodes: 1,
    };

    fn parent_of(children: &[Slot]) -> Slot {
        Slot {
            mark: false,
            depth: children.iter().map(|c| c.depth).max().unwrap_or(0) + 1,
            nodes: children.iter().map(|c| c.nodes).sum::<u64>() + 1,
        }
    }

    fn absorb(&mut self, child: Slot) {
        self.depth = self.depth.max(child.depth + 1);
        self.nodes += child.nodes;
    }
}

/// A cursor over `data.pkl` that reports running off its end as truncation.
struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Reason<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.data.len())
            .ok_or_else(|| {
                format!(
                    "truncated pickle (ends inside the record at byte {})",
                    self.pos
                )
            })?;
        let taken = &self.data[self.pos..end];
        self.pos = end;
        Ok(taken)
    }

    fn u8(&mut self) -> Reason<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Reason<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn line(&mut self) -> Reason<&'a [u8]> {
        let rest = &self.data[self.pos..];
        let len = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("truncated pickle (unterminated name)")?;
        self.pos += len + 1;
        Ok(&rest[..len])
    }
}

/// Walks the opcodes exactly as candle's `Stack::read_loop` will (same opcode set, same stack
/// effects, memo entries copied by value), without building anything, and refuses input that
/// would make that reader panic (a LONG1 of more than 8 bytes overflows its shift) or fail in ways
/// `catch_unwind` cannot catch: nesting deep enough to overflow the stack on drop, or memo copies
/// that grow exponentially. Truncation is reported here too, with a position.
fn prescan(pkl: &[u8]) -> Reason<()> {
    let mut input = Bytes { data: pkl, pos: 0 };
    let mut stack: Vec<Slot> = Vec::new();
    let mut memo: HashMap<u32, Slot> = HashMap::new();
    let mut budget: u64 = 0;

    fn pop(stack: &mut Vec<Slot>) -> Reason<Slot> {
        stack
            .pop()
            .ok_or_else(|| "malformed pickle (pops an empty stack)".to_string())
    }
    fn pop_to_mark(stack: &mut Vec<Slot>) -> Reason<Vec<Slot>> {
        let mark = stack
            .iter()
            .rposition(|s| s.mark)
            .ok_or_else(|| "malformed pickle (no mark on the stack)".to_string())?;
        let items = stack.split_off(mark + 1);
        stack.pop();
        Ok(items)
    }
    fn top(stack: &mut [Slot]) -> Reason<&mut Slot> {
        stack
            .last_mut()
            .ok_or_else(|| "malformed pickle (empty stack)".to_string())
    }

    loop {
        let at = input.pos;
        let op = input.u8()?;
        // The one value this opcode leaves on the stack, if it pushes one.
        let pushed = match op {
            0x80 => {
                input.u8()?;
                None
            }
            b'c' => {
                input.line()?;
                input.line()?;
                Some(Slot::LEAF)
            }
            // BININT1, BININT2, BININT, BINFLOAT: a fixed-size argument.
            b'K' | b'M' | b'J' | b'G' => {
                input.take(match op {
                    b'K' => 1,
                    b'M' => 2,
                    b'J' => 4,
                    _ => 8,
                })?;
                Some(Slot::LEAF)
            }
            // BINGET, LONG_BINGET: a copy of a memo entry.
            b'h' | b'j' => {
                let id = if op == b'h' {
                    u32::from(input.u8()?)
                } else {
                    input.u32()?
                };
                let slot = *memo
                    .get(&id)
                    .ok_or_else(|| format!("malformed pickle (memo {id} unset at byte {at})"))?;
                budget += slot.nodes;
                Some(slot)
            }
            // BINPUT, LONG_BINPUT: a copy of the top of the stack into the memo.
            b'q' | b'r' => {
                let id = if op == b'q' {
                    u32::from(input.u8()?)
                } else {
                    input.u32()?
                };
                let slot = *top(&mut stack)?;
                budget += slot.nodes;
                memo.insert(id, slot);
                None
            }
            b'X' => {
                let len = input.u32()?;
                input.take(len as usize)?;
                // Long strings weigh more when the memo copies them.
                Some(Slot {
                    nodes: 1 + u64::from(len) / 32,
                    ..Slot::LEAF
                })
            }
            0x8a => {
                let n = input.u8()?;
                if n > 8 {
                    return Err(format!(
                        "unsupported pickle (a {n}-byte integer at byte {at}; at most 8 are read)"
                    ));
                }
                input.take(usize::from(n))?;
                Some(Slot::LEAF)
            }
            // candle maps DICT (`d`) to EMPTY_DICT, so it pops nothing.
            0x88 | 0x89 | b'N' | b'}' | b'd' | b']' | b')' => Some(Slot::LEAF),
            b'(' => Some(Slot {
                mark: true,
                depth: 0,
                nodes: 1,
            }),
            b'Q' => Some(Slot::parent_of(&[pop(&mut stack)?])),
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if stack.len() < n {
                    return Err("malformed pickle (pops an empty stack)".into());
                }
                let items = stack.split_off(stack.len() - n);
                Some(Slot::parent_of(&items))
            }
            b't' => Some(Slot::parent_of(&pop_to_mark(&mut stack)?)),
            b'R' | 0x81 | b'b' => {
                let args = pop(&mut stack)?;
                let callable = pop(&mut stack)?;
                Some(Slot::parent_of(&[callable, args]))
            }
            b'a' | b's' | b'e' | b'u' => {
                let items = match op {
                    b'a' => vec![pop(&mut stack)?],
                    b's' => {
                        let value = pop(&mut stack)?;
                        vec![pop(&mut stack)?, value]
                    }
                    _ => pop_to_mark(&mut stack)?,
                };
                let container = top(&mut stack)?;
                for item in items {
                    container.absorb(item);
                }
                if container.depth > MAX_PICKLE_DEPTH {
                    return Err(format!(
                        "pickle nested deeper than {MAX_PICKLE_DEPTH} levels"
                    ));
                }
                None
            }
            b'.' => {
                return if stack.is_empty() {
                    Err("malformed pickle (nothing on the stack at STOP)".into())
                } else {
                    Ok(())
                };
            }
            other => {
                return Err(format!(
                    "pickle opcode 0x{other:02x} at byte {at} is not supported (damaged file, or \
                     a pickle protocol above 2)"
                ))
            }
        };
        if let Some(slot) = pushed {
            if slot.depth > MAX_PICKLE_DEPTH {
                return Err(format!(
                    "pickle nested deeper than {MAX_PICKLE_DEPTH} levels"
                ));
            }
            budget += 1;
            stack.push(slot);
        }
        if budget > MAX_PICKLE_NODES {
            return Err(format!(
                "pickle would build more than {MAX_PICKLE_NODES} objects"
            ));
        }
    }
}

/// `module.Class`, if `obj` is a class reference.
fn class_name(obj: &Object) -> Option<(&str, &str)> {
    match obj {
        Object::Class {
            module_name,
            class_name,
        } => Some((module_name, class_name)),
        _ => None,
    }
}

/// A few words on what an object is, for messages.
fn describe(obj: &Object) -> String {
    match obj {
        Object::Dict(items) => format!("a dict of {} entries without tensors", items.len()),
        Object::Build { callable, .. } | Object::Reduce { callable, .. } => {
            let class = match callable.as_ref() {
                Object::Reduce { callable, .. } => class_name(callable),
                other => class_name(other),
            };
            match class {
                Some((module, class)) => format!("a `{module}.{class}` object"),
                None => "an object of unknown class".into(),
            }
        }
        Object::List(_) => "a list".into(),
        Object::Tuple(_) => "a tuple".into(),
        Object::Unicode(_) => "a string".into(),
        Object::Int(_) | Object::Long(_) | Object::Float(_) | Object::Bool(_) => "a number".into(),
        Object::None => "None".into(),
        _ => "something else".into(),
    }
}

/// Whether `obj` is one of the calls through which PyTorch pickles a tensor or parameter.
fn is_tensor_record(obj: &Object) -> bool {
    match obj {
        Object::Reduce { callable, .. } => matches!(
            class_name(callable),
            Some(("torch._utils", "_rebuild_tensor_v2"))
                | Some(("torch._utils", "_rebuild_parameter"))
                | Some(("torch._utils", "_rebuild_parameter_with_state"))
                | Some(("torch._tensor", "_rebuild_from_type_v2"))
        ),
        _ => false,
    }
}

/// The `__dict__` of a pickled `nn.Module`: NEWOBJ of its class, then BUILD with a state dict
/// holding `_parameters`, `_buffers` and `_modules`. Gives the object back if it is not one.
fn module_state(obj: Object) -> std::result::Result<Vec<(Object, Object)>, Object> {
    match obj {
        Object::Build { callable, args } => match *args {
            Object::Dict(state)
                if state.iter().any(|(k, _)| {
                    matches!(k, Object::Unicode(k) if k == "_modules" || k == "_parameters")
                }) =>
            {
                Ok(state)
            }
            args => Err(Object::Build { callable, args: Box::new(args) }),
        },
        other => Err(other),
    }
}

/// `(name, tensor record)` pairs of the pickle's root (order: see `read_archive`).
fn tensor_records(root: Object) -> Reason<Vec<(String, Object)>> {
    let mut records = Vec::new();
    collect(root, &mut records)?;
    Ok(records)
}

fn collect(obj: Object, out: &mut Vec<(String, Object)>) -> Reason<()> {
    let obj = match module_state(obj) {
        Ok(state) => return walk_module(state, "", out),
        Err(obj) => obj,
    };
    let Object::Dict(items) = obj else {
        return Ok(());
    };
    if !items.iter().any(|(_, v)| is_tensor_record(v)) {
        // Training scripts often save {"epoch": .., "state_dict": ..} or {"model": model}.
        let wrapped = items.into_iter().find(|(k, _)| {
            matches!(k, Object::Unicode(k) if matches!(k.as_str(), "state_dict" | "model_state_dict" | "model"))
        });
        return match wrapped {
            Some((_, inner)) => collect(inner, out),
            None => Ok(()),
        };
    }
    // A state dict; other values (e.g. `_metadata` of an OrderedDict) are not weights.
    out.extend(items.into_iter().filter_map(|(k, v)| match k {
        Object::Unicode(k) if is_tensor_record(&v) => Some((k, v)),
        _ => None,
    }));
    Ok(())
}

/// Mirrors `nn.Module.state_dict`: the module's parameters, then its persistent buffers, then
/// each submodule under `<prefix><name>.`, skipping `None` entries as PyTorch does.
fn walk_module(
    state: Vec<(Object, Object)>,
    prefix: &str,
    out: &mut Vec<(String, Object)>,
) -> Reason<()> {
    let mut parameters = Vec::new();
    let mut buffers = Vec::new();
    let mut modules = Vec::new();
    let mut non_persistent = HashSet::new();
    for (key, value) in state {
        let Object::Unicode(key) = key else { continue };
        match (key.as_str(), value) {
            ("_parameters", Object::Dict(items)) => parameters = items,
            ("_buffers", Object::Dict(items)) => buffers = items,
            ("_modules", Object::Dict(items)) => modules = items,
            ("_non_persistent_buffers_set", set) => non_persistent = set_of_strings(set),
            _ => {}
        }
    }
    let named = |items: Vec<(Object, Object)>| {
        items.into_iter().filter_map(|(k, v)| match (k, v) {
            (_, Object::None) => None,
            (Object::Unicode(k), v) => Some((k, v)),
            _ => None,
        })
    };
    for (name, value) in named(parameters) {
        if !is_tensor_record(&value) {
            return Err(format!(
                "parameter `{prefix}{name}` is {}, not a tensor",
                describe(&value)
            ));
        }
        out.push((format!("{prefix}{name}"), value));
    }
    for (name, value) in named(buffers) {
        if non_persistent.contains(&name) {
            continue;
        }
        if !is_tensor_record(&value) {
            return Err(format!(
                "buffer `{prefix}{name}` is {}, not a tensor",
                describe(&value)
            ));
        }
        out.push((format!("{prefix}{name}"), value));
    }
    for (name, value) in named(modules) {
        let path = format!("{prefix}{name}");
        match module_state(value) {
            Ok(state) => walk_module(state, &format!("{path}."), out)?,
            // The pickle memo keeps a module only as it was before its state was set, so a module
            // that appears twice (shared weights) comes back empty the second time.
            Err(other) => {
                return Err(format!(
                    "submodule `{path}` is {} without module state (shared submodules are not \
                     supported)",
                    describe(&other)
                ))
            }
        }
    }
    Ok(())
}

/// The names in a pickled `set` (`builtins.set([...])`, REDUCE of the class on a list).
fn set_of_strings(obj: Object) -> HashSet<String> {
    let Object::Reduce { args, .. } = obj else {
        return HashSet::new();
    };
    let Object::Tuple(args) = *args else {
        return HashSet::new();
    };
    args.into_iter()
        .flat_map(|arg| match arg {
            Object::List(items) => items,
            _ => Vec::new(),
        })
        .filter_map(|item| item.unicode().ok())
        .collect()
}

/// Locates a tensor's storage, dtype and layout with candle's `into_tensor_info`, after checking
/// the record has the arity that function indexes blindly (`Vec::remove` panics when short).
fn tensor_info(record: Object, name: &str, storage_dir: &Path) -> Reason<TensorInfo> {
    check_record(&record)?;
    // candle knows `_rebuild_parameter`; the `_with_state` form only appends state it ignores.
    let record = match record {
        Object::Reduce { callable, args }
            if class_name(&callable) == Some(("torch._utils", "_rebuild_parameter_with_state")) =>
        {
            let callable = Object::Class {
                module_name: "torch._utils".into(),
                class_name: "_rebuild_parameter".into(),
            };
            Object::Reduce {
                callable: Box::new(callable),
                args,
            }
        }
        other => other,
    };
    let info = catch_unwind(AssertUnwindSafe(|| {
        record.into_tensor_info(Object::Unicode(name.to_string()), storage_dir)
    }));
    match info {
        Ok(Ok(Some(info))) => Ok(info),
        Ok(Ok(None)) => Err("not a plain tensor (subclass or unknown rebuild function)".into()),
        Ok(Err(e)) => Err(format!("malformed tensor record ({e})")),
        Err(_) => Err("malformed tensor record".into()),
    }
}

fn check_record(record: &Object) -> Reason<()> {
    let malformed = |why: &str| Err(format!("malformed tensor record ({why})"));
    let Object::Reduce { callable, args } = record else {
        return malformed("not a call");
    };
    let Object::Tuple(args) = args.as_ref() else {
        return malformed("arguments are not a tuple");
    };
    match class_name(callable) {
        Some(("torch._utils", "_rebuild_tensor_v2")) => check_rebuild_args(args),
        Some(("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state")) => {
            match args.first() {
                Some(inner @ Object::Reduce { callable, .. })
                    if class_name(callable) == Some(("torch._utils", "_rebuild_tensor_v2")) =>
                {
                    check_record(inner)
                }
                _ => malformed("parameter without tensor data"),
            }
        }
        Some(("torch._tensor", "_rebuild_from_type_v2")) => match args.as_slice() {
            [func, _, Object::Tuple(inner), ..]
                if class_name(func) == Some(("torch._utils", "_rebuild_tensor_v2")) =>
            {
                check_rebuild_args(inner)
            }
            _ => malformed("unexpected `_rebuild_from_type_v2` arguments"),
        },
        _ => malformed("unknown rebuild function"),
    }
}

/// `_rebuild_tensor_v2(storage, storage_offset, size, stride, ...)`, storage being the persistent
/// id `("storage", StorageClass, key, location, numel)`.
fn check_rebuild_args(args: &[Object]) -> Reason<()> {
    let int = |obj: &Object| match obj {
        Object::Int(v) => Some(i64::from(*v)),
        Object::Long(v) => Some(*v),
        _ => None,
    };
    let [Object::PersistentLoad(storage), offset, Object::Tuple(_), Object::Tuple(_), ..] = args
    else {
        return Err("malformed tensor record (unexpected `_rebuild_tensor_v2` arguments)".into());
    };
    match storage.as_ref() {
        Object::Tuple(s) if s.len() >= 5 && int(&s[4]).is_some_and(|n| n >= 0) => {}
        _ => return Err("malformed tensor record (unexpected storage id)".into()),
    }
    // candle multiplies the offset by the element size unchecked.
    match int(offset) {
        Some(offset) if (0..1 << 48).contains(&offset) => Ok(()),
        _ => Err("malformed tensor record (bad storage offset)".into()),
    }
}

/// Reads one tensor from its storage (cached, as several tensors may share one), honouring the
/// storage offset and strides.
fn load_tensor(
    zip: &mut zip::ZipArchive<Cursor<&[u8]>>,
    info: &TensorInfo,
    storages: &mut HashMap<String, Vec<u8>>,
    big_endian: bool,
) -> Reason<Tensor> {
    let elem = info.dtype.size_in_bytes();
    let storage_bytes = info
        .storage_size
        .checked_mul(elem)
        .ok_or("storage size overflows")?;
    if !storages.contains_key(&info.path) {
        let mut data = read_entry(zip, &info.path, storage_bytes)?;
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
    let storage = storages
        .get(&info.path)
        .map(Vec::as_slice)
        .unwrap_or_default();

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

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/torch");

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(Path::new(FIXTURES).join(name)).unwrap()
    }

    /// The `data.pkl` of a fixture, and the archive's other members.
    fn members(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
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

    fn zip_of(members: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, data) in members {
            zip.start_file(name.as_str(), options).unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    fn pickle_of(archive: &[u8]) -> Vec<u8> {
        members(archive)
            .into_iter()
            .find(|(n, _)| n.ends_with("data.pkl"))
            .unwrap()
            .1
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

    #[test]
    fn every_truncated_pickle_is_an_error() {
        let pkl = pickle_of(&fixture("lighter_at1.state-dict-f16.pth"));
        for len in (0..pkl.len() - 1).step_by(7) {
            let err = parse_pickle(&pkl[..len]).unwrap_err();
            assert!(
                err.contains("truncated") || err.contains("malformed"),
                "cut at {len}: {err}"
            );
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
