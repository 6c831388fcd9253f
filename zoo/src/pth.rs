//! PyTorch checkpoint reader: the zip format (PyTorch >= 1.6) and the legacy format that
//! `torch.save` wrote before it (and still writes with `_use_new_zipfile_serialization=False`),
//! which is what Cadene's pretrainedmodels files use. Only state dicts of plain tensors are
//! read; the pickle is interpreted, never executed.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};

/// A problem with a checkpoint's content (the caller adds the file name).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PthError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, PthError> {
    Err(PthError(msg.into()))
}

/// The legacy format starts with this pickle: protocol 2, LONG1 of 10 bytes, the magic number
/// 0x1950a86a20f9469cfc6c, STOP.
const LEGACY_MAGIC: [u8; 15] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e,
];

/// Whether `bytes` start like a legacy PyTorch checkpoint.
pub fn is_legacy(bytes: &[u8]) -> bool {
    bytes.starts_with(&LEGACY_MAGIC)
}

/// Whether `bytes` start like a zip archive (the current PyTorch format).
pub fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

/// Where a tensor's data lives and how to view it.
struct TensorRef {
    storage_key: String,
    dtype: DType,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

fn storage_dtype(class_name: &str) -> Result<DType, PthError> {
    Ok(match class_name {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ByteStorage" => DType::U8,
        other => return err(format!("unsupported storage type {other}")),
    })
}

fn usizes(o: Object) -> Result<Vec<usize>, PthError> {
    match o {
        Object::Tuple(v) | Object::List(v) => v
            .into_iter()
            .map(|o| match o {
                Object::Int(i) if i >= 0 => Ok(i as usize),
                Object::Long(i) if i >= 0 => Ok(i as usize),
                o => err(format!("expected a size, found {o:?}")),
            })
            .collect(),
        o => err(format!("expected a tuple of sizes, found {o:?}")),
    }
}

fn int(o: Object) -> Result<usize, PthError> {
    match o {
        Object::Int(i) if i >= 0 => Ok(i as usize),
        Object::Long(i) if i >= 0 => Ok(i as usize),
        o => err(format!("expected an integer, found {o:?}")),
    }
}

/// Interprets `_rebuild_tensor_v2(storage, offset, size, stride, ...)`,
/// `_rebuild_tensor(storage, offset, size, stride)` and `_rebuild_parameter(tensor, ...)`.
/// Returns `None` for values that are not tensors.
fn tensor_ref(o: Object) -> Result<Option<TensorRef>, PthError> {
    let (callable, args) = match o {
        Object::Reduce { callable, args } => (*callable, *args),
        _ => return Ok(None),
    };
    let (module, name) = match callable {
        Object::Class {
            module_name,
            class_name,
        } => (module_name, class_name),
        _ => return Ok(None),
    };
    let Object::Tuple(mut args) = args else {
        return Ok(None);
    };
    match (module.as_str(), name.as_str()) {
        ("torch._utils", "_rebuild_parameter") if !args.is_empty() => {
            tensor_ref(args.swap_remove(0))
        }
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") if args.len() >= 4 => {
            let mut args = args.into_iter();
            let storage = args.next().expect("four args");
            let offset = int(args.next().expect("four args"))?;
            let size = usizes(args.next().expect("four args"))?;
            let stride = usizes(args.next().expect("four args"))?;
            let Object::PersistentLoad(id) = storage else {
                return err("tensor storage is not a persistent reference");
            };
            let Object::Tuple(id) = *id else {
                return err("malformed storage reference");
            };
            // ('storage', storage_type, key, location, numel[, view_metadata])
            if id.len() < 5 {
                return err("malformed storage reference");
            }
            let mut id = id.into_iter().skip(1);
            let dtype = match id.next() {
                Some(Object::Class { class_name, .. }) => storage_dtype(&class_name)?,
                other => return err(format!("unexpected storage type {other:?}")),
            };
            let storage_key = match id.next() {
                Some(Object::Unicode(k)) => k,
                other => return err(format!("unexpected storage key {other:?}")),
            };
            let mut offset = offset;
            // Legacy views: (view_key, view_offset, view_size) into the root storage.
            if let Some(Object::Tuple(view)) = id.nth(2)
                && let Some(o) = view.into_iter().nth(1)
            {
                offset += int(o)?;
            }
            Ok(Some(TensorRef {
                storage_key,
                dtype,
                offset,
                size,
                stride,
            }))
        }
        _ => Ok(None),
    }
}

/// Finds the state dict: the top-level dict, or its `state_dict` / `model` entry.
fn state_dict(obj: Object) -> Result<Vec<(String, TensorRef)>, PthError> {
    let Object::Dict(items) = obj else {
        return err("the checkpoint is not a dictionary of tensors");
    };
    let mut out = vec![];
    let mut nested = None;
    for (k, v) in items {
        let Object::Unicode(k) = k else { continue };
        if matches!(k.as_str(), "state_dict" | "model") && matches!(v, Object::Dict(_)) {
            nested = Some(v);
            continue;
        }
        if let Some(t) = tensor_ref(v)? {
            out.push((k, t));
        }
    }
    if out.is_empty()
        && let Some(n) = nested
    {
        return state_dict(n);
    }
    Ok(out)
}

fn pickle(r: &mut Cursor<&[u8]>) -> Result<Object, PthError> {
    let mut stack = Stack::empty();
    stack
        .read_loop(r)
        .map_err(|e| PthError(format!("corrupt pickle: {e}")))?;
    stack
        .finalize()
        .map_err(|e| PthError(format!("corrupt pickle: {e}")))
}

fn build(t: &TensorRef, data: &[u8]) -> Result<Tensor, PthError> {
    let elem = t.dtype.size_in_bytes();
    let numel: usize = t.size.iter().product();
    let mut contiguous = vec![1usize; t.size.len()];
    for d in (0..t.size.len().saturating_sub(1)).rev() {
        contiguous[d] = contiguous[d + 1] * t.size[d + 1];
    }
    if numel == 0 || contiguous == t.stride {
        let bytes = data
            .get(t.offset * elem..(t.offset + numel) * elem)
            .ok_or_else(|| PthError("tensor data is truncated".into()))?;
        return Tensor::from_raw_buffer(bytes, t.dtype, &t.size, &Device::Cpu)
            .map_err(|e| PthError(e.to_string()));
    }
    // Copy out the (possibly strided) view, element by element in row-major order.
    let mut bytes = Vec::with_capacity(numel * elem);
    let mut index = vec![0usize; t.size.len()];
    for _ in 0..numel {
        let pos = t.offset
            + index
                .iter()
                .zip(&t.stride)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        let b = data
            .get(pos * elem..(pos + 1) * elem)
            .ok_or_else(|| PthError("tensor data is truncated".into()))?;
        bytes.extend_from_slice(b);
        for d in (0..index.len()).rev() {
            index[d] += 1;
            if index[d] < t.size[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Tensor::from_raw_buffer(&bytes, t.dtype, &t.size, &Device::Cpu)
        .map_err(|e| PthError(e.to_string()))
}

/// Reads a legacy (non-zip) checkpoint.
pub fn read_legacy(bytes: &[u8]) -> Result<Vec<(String, Tensor)>, PthError> {
    if !is_legacy(bytes) {
        return err("not a legacy PyTorch checkpoint");
    }
    let mut r = Cursor::new(bytes);
    r.set_position(LEGACY_MAGIC.len() as u64);
    let version = pickle(&mut r)?;
    if !matches!(version, Object::Int(1001)) {
        return err(format!("unsupported legacy protocol {version:?}"));
    }
    let _sys_info = pickle(&mut r)?;
    let refs = state_dict(pickle(&mut r)?)?;
    let keys = match pickle(&mut r)? {
        Object::List(k) | Object::Tuple(k) => k,
        o => return err(format!("expected the list of storages, found {o:?}")),
    };
    // The storages follow in that order, each as an i64 element count then raw data.
    let elem_sizes: HashMap<&str, usize> = refs
        .iter()
        .map(|(_, t)| (t.storage_key.as_str(), t.dtype.size_in_bytes()))
        .collect();
    let mut storages: HashMap<String, &[u8]> = HashMap::new();
    let mut pos = r.position() as usize;
    for k in keys {
        let Object::Unicode(k) = k else {
            return err("storage key is not a string");
        };
        let mut n = [0u8; 8];
        (&bytes[pos.min(bytes.len())..])
            .read_exact(&mut n)
            .map_err(|_| PthError("file ends inside the tensor data".into()))?;
        let numel = i64::from_le_bytes(n);
        let elem = elem_sizes.get(k.as_str()).copied().unwrap_or(1);
        let len = usize::try_from(numel)
            .ok()
            .and_then(|n| n.checked_mul(elem))
            .ok_or_else(|| PthError("corrupt storage size".into()))?;
        let start = pos + 8;
        let data = bytes
            .get(start..start + len)
            .ok_or_else(|| PthError("file ends inside the tensor data".into()))?;
        storages.insert(k, data);
        pos = start + len;
    }
    refs.into_iter()
        .map(|(name, t)| {
            let data = storages
                .get(&t.storage_key)
                .ok_or_else(|| PthError(format!("{name}: its storage is missing")))?;
            Ok((name, build(&t, data)?))
        })
        .collect()
}

/// Reads a zip checkpoint (`archive/data.pkl` + `archive/data/<key>`).
pub fn read_zip(bytes: &[u8]) -> Result<Vec<(String, Tensor)>, PthError> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| PthError(format!("corrupt zip archive: {e}")))?;
    let pkl = zip
        .file_names()
        .filter_map(Result::ok)
        .find(|n| n.ends_with("data.pkl"))
        .map(|n| n.into_owned())
        .ok_or_else(|| PthError("zip archive without data.pkl".into()))?;
    let dir = pkl.trim_end_matches("data.pkl").to_owned();
    let mut buf = vec![];
    zip.by_name(&pkl)
        .and_then(|mut f| f.read_to_end(&mut buf).map_err(Into::into))
        .map_err(|e| PthError(format!("cannot read {pkl}: {e}")))?;
    let refs = state_dict(pickle(&mut Cursor::new(&buf))?)?;
    let mut cache: HashMap<String, Vec<u8>> = HashMap::new();
    let mut out = vec![];
    for (name, t) in refs {
        if !cache.contains_key(&t.storage_key) {
            let mut data = vec![];
            let entry = format!("{dir}data/{}", t.storage_key);
            zip.by_name(&entry)
                .and_then(|mut f| f.read_to_end(&mut data).map_err(Into::into))
                .map_err(|e| PthError(format!("{name}: cannot read {entry}: {e}")))?;
            cache.insert(t.storage_key.clone(), data);
        }
        out.push((name, build(&t, &cache[&t.storage_key])?));
    }
    Ok(out)
}
