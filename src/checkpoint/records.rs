//! The object tree: finds the tensor records in a decoded `data.pkl` (a pickled `nn.Module`,
//! walked as `state_dict` does, or a plain or wrapped state dict) and turns each into a
//! [`TensorInfo`] after checking it has the shape candle's `into_tensor_info` relies on.

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use candle_core::pickle::{Object, TensorInfo};

use super::limits::Reason;

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
pub(super) fn describe(obj: &Object) -> String {
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
pub(super) fn tensor_records(root: Object) -> Reason<Vec<(String, Object)>> {
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
pub(super) fn tensor_info(record: Object, name: &str, storage_dir: &Path) -> Reason<TensorInfo> {
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

pub(super) fn check_record(record: &Object) -> Reason<()> {
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
