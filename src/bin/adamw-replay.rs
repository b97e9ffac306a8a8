//! adamw-replay: runs conformance cases (docs/trajectory_format.md) through the public
//! C ABI and writes the results in the same format, for comparison with Keras' results.
//!
//! usage: adamw-replay [--threads N] [--no-simd] [--simd LEVEL] [--device cuda|cuda:N|host-kernels] [CASES.json] > RESULTS.json
//!   (reads standard input without a file; --threads sets every optimizer's thread setting,
//!   --no-simd runs the portable loops, --simd portable|avx2|avx512|avx512bf16 runs that level or the
//!   best below it this processor has, --device runs every case on a device: the results must
//!   not change, except that get_config reports jit_compile as in force)

use std::ffi::{CStr, c_char, c_void};
use std::io::Read;
use std::process::ExitCode;

use adamw::ffi::*;
use half::{bf16, f16};
use serde_json::{Map, Value, json};

#[path = "../json_number.rs"]
mod json_number;
use json_number::{float_from_json, float_to_json};

/// A failed C call: where it happened is decided by the caller.
struct Failure {
    status: adamw_status,
    message: String,
}

fn check(status: adamw_status) -> Result<(), Failure> {
    if status == adamw_status::Ok {
        return Ok(());
    }
    let mut buf = vec![0u8; 4096];
    let mut len = 0usize;
    // SAFETY: `buf` has 4096 writable bytes and `len` is a valid out-pointer.
    unsafe { adamw_last_error(buf.as_mut_ptr().cast(), buf.len(), &mut len) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Err(Failure { status, message: String::from_utf8_lossy(&buf[..end]).into_owned() })
}

fn status_name(status: adamw_status) -> String {
    // SAFETY: adamw_status_name returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(adamw_status_name(status as u32)) }.to_string_lossy().into_owned()
}

/// A variable's values in its dtype.
enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
    BF16(Vec<bf16>),
    F16(Vec<f16>),
}

impl Values {
    /// Values of `dtype` from the case's numbers, rounded to the dtype as TensorFlow converts a
    /// Python float (through float32 for the 16-bit dtypes); exact for the values of the dtype.
    fn from_json(dtype: &str, v: &[f64]) -> Values {
        match dtype {
            "float64" => Values::F64(v.to_vec()),
            "bfloat16" => Values::BF16(v.iter().map(|&x| bf16::from_f32(x as f32)).collect()),
            "float16" => Values::F16(v.iter().map(|&x| f16::from_f32(x as f32)).collect()),
            _ => Values::F32(v.iter().map(|&x| x as f32).collect()),
        }
    }
    fn dtype(&self) -> u32 {
        (match self {
            Values::F32(_) => adamw_dtype::Float32,
            Values::F64(_) => adamw_dtype::Float64,
            Values::BF16(_) => adamw_dtype::Bfloat16,
            Values::F16(_) => adamw_dtype::Float16,
        }) as u32
    }
    fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
            Values::BF16(v) => v.len(),
            Values::F16(v) => v.len(),
        }
    }
    fn ptr(&self) -> *const c_void {
        match self {
            Values::F32(v) => v.as_ptr().cast(),
            Values::F64(v) => v.as_ptr().cast(),
            Values::BF16(v) => v.as_ptr().cast(),
            Values::F16(v) => v.as_ptr().cast(),
        }
    }
    fn ptr_mut(&mut self) -> *mut c_void {
        match self {
            Values::F32(v) => v.as_mut_ptr().cast(),
            Values::F64(v) => v.as_mut_ptr().cast(),
            Values::BF16(v) => v.as_mut_ptr().cast(),
            Values::F16(v) => v.as_mut_ptr().cast(),
        }
    }
    fn to_json(&self) -> Value {
        let numbers = |x: &mut dyn Iterator<Item = f64>| Value::Array(x.map(float_to_json).collect());
        match self {
            Values::F32(v) => numbers(&mut v.iter().map(|&x| x as f64)),
            Values::F64(v) => numbers(&mut v.iter().copied()),
            Values::BF16(v) => numbers(&mut v.iter().map(|x| x.to_f64())),
            Values::F16(v) => numbers(&mut v.iter().map(|x| x.to_f64())),
        }
    }
    /// `len` zeros of the C dtype `dtype`.
    fn zeros(dtype: u32, len: usize) -> Values {
        match dtype {
            d if d == adamw_dtype::Float64 as u32 => Values::F64(vec![0.0; len]),
            d if d == adamw_dtype::Bfloat16 as u32 => Values::BF16(vec![bf16::ZERO; len]),
            d if d == adamw_dtype::Float16 as u32 => Values::F16(vec![f16::ZERO; len]),
            _ => Values::F32(vec![0.0; len]),
        }
    }
}

/// Numbers of a (possibly nested) JSON list, flattened row-major.
fn flatten(v: &Value, out: &mut Vec<f64>) -> Result<(), String> {
    match v {
        Value::Array(items) => items.iter().try_for_each(|x| flatten(x, out)),
        other => {
            out.push(float_from_json(other).ok_or_else(|| format!("not a number: {other}"))?);
            Ok(())
        }
    }
}

struct Optimizer(*mut adamw_optimizer);

impl Drop for Optimizer {
    fn drop(&mut self) {
        // SAFETY: the handle came from adamw_optimizer_from_config_json and is freed once.
        unsafe { adamw_optimizer_free(self.0) };
    }
}

/// Runs `call` on entries whose buffers are copies in the GPU's memory (an optimizer on a CUDA
/// device takes device pointers), then copies the variables back. Every buffer of the entries
/// is distinct and live; sparse indices stay host memory.
#[cfg(feature = "cuda")]
fn on_gpu(
    ordinal: u32,
    entries: &[adamw_gradient],
    call: impl FnOnce(&[adamw_gradient]) -> adamw_status,
) -> Result<adamw_status, String> {
    use cudarc::driver::{CudaContext, result};
    let ctx = CudaContext::new(ordinal as usize).map_err(|e| format!("GPU {ordinal}: {e:?}"))?;
    ctx.bind_to_thread().map_err(|e| format!("{e:?}"))?;
    let size = |dtype: u32| {
        if dtype & 0xffff == adamw_dtype::Float64 as u32 {
            8
        } else if dtype & 0xffff == adamw_dtype::Float32 as u32 {
            4
        } else {
            2
        }
    };
    let gradient_size = |dtype: u32| match dtype >> ADAMW_GRADIENT_DTYPE_SHIFT {
        0 => size(dtype),
        g => size(g),
    };
    /// The copies, freed however the function returns.
    struct Allocations(Vec<u64>);
    impl Drop for Allocations {
        fn drop(&mut self) {
            for &d in &self.0 {
                // SAFETY: allocated below, freed once.
                unsafe { result::free_sync(d) }.ok();
            }
        }
    }
    let mut allocations = Allocations(Vec::new());
    let mut copy_in = |ptr: *const c_void, bytes: usize| -> Result<*const c_void, String> {
        if ptr.is_null() || bytes == 0 {
            return Ok(ptr);
        }
        // SAFETY: `ptr` holds `bytes` bytes (the entry's own buffer); the copy goes to a fresh
        // allocation of that size.
        unsafe {
            let d = result::malloc_sync(bytes).map_err(|e| format!("cuMemAlloc: {e:?}"))?;
            allocations.0.push(d);
            result::memcpy_htod_sync(d, std::slice::from_raw_parts(ptr.cast::<u8>(), bytes))
                .map_err(|e| format!("{e:?}"))?;
            Ok(d as *const c_void)
        }
    };
    let mut on_device = entries.to_vec();
    for e in &mut on_device {
        e.data = copy_in(e.data, e.len * size(e.dtype))?.cast_mut();
        e.dense = copy_in(e.dense, e.len * gradient_size(e.dtype))?;
        e.values = copy_in(e.values, e.num_values * gradient_size(e.dtype))?;
    }
    let status = call(&on_device);
    for (host, device) in entries.iter().zip(&on_device) {
        if host.len > 0 && !host.data.is_null() {
            // SAFETY: `device.data` is the copy of `host.data`, of the same size.
            unsafe {
                let out = std::slice::from_raw_parts_mut(host.data.cast::<u8>(), host.len * size(host.dtype));
                result::memcpy_dtoh_sync(out, device.data as u64).map_err(|e| format!("{e:?}"))?;
            }
        }
    }
    Ok(status)
}

/// An entry for variable `variable`'s `len` values at `data`, without a gradient yet.
fn without_gradient(variable: usize, dtype: u32, data: *mut c_void, len: usize) -> adamw_gradient {
    adamw_gradient {
        variable,
        dtype,
        data,
        len,
        dense: std::ptr::null(),
        indices: std::ptr::null(),
        num_indices: 0,
        values: std::ptr::null(),
        num_values: 0,
    }
}

/// What every case's optimizer is set to besides its config.
struct Settings {
    threads: Option<u32>,
    /// An `adamw_device_kind` and a GPU ordinal.
    device: Option<(u32, u32)>,
}

fn run_case(case: &Value, settings: &Settings) -> Result<Value, String> {
    let id = case["id"].clone();
    let error = |at: Value, f: Failure| json!({"type": status_name(f.status), "message": f.message, "at": at});
    let adamw_config = case.get("config").cloned().unwrap_or_else(|| json!({}));
    // A loss-scaled case is Keras' LossScaleOptimizer around that AdamW, as its config says.
    let scaled = case.get("loss_scale").is_some();
    let config = match case.get("loss_scale") {
        Some(ls) => {
            let mut m = Map::new();
            m.insert("inner_optimizer".into(), adamw_config);
            for key in ["dynamic", "initial_scale", "dynamic_growth_steps"] {
                if let Some(v) = ls.get(key) {
                    m.insert(key.into(), v.clone());
                }
            }
            Value::Object(m)
        }
        None => adamw_config,
    }
    .to_string();
    let mut raw = std::ptr::null_mut();
    // SAFETY: `config` is valid UTF-8 of the given length; `raw` is a valid out-pointer.
    if let Err(f) = check(unsafe { adamw_optimizer_from_config_json(config.as_ptr().cast(), config.len(), &mut raw) }) {
        return Ok(json!({"id": id, "error": error(json!("config"), f)}));
    }
    let opt = Optimizer(raw);
    if let Some(n) = settings.threads {
        // SAFETY: live handle.
        check(unsafe { adamw_optimizer_set_threads(opt.0, n) }).map_err(|f| f.message)?;
    }
    if let Some((kind, ordinal)) = settings.device {
        // SAFETY: live handle.
        check(unsafe { adamw_optimizer_set_device(opt.0, kind, ordinal) }).map_err(|f| f.message)?;
    }

    let vars = case["variables"].as_array().ok_or("case without variables")?;
    let mut names = Vec::new();
    let mut shapes: Vec<Vec<usize>> = Vec::new();
    let mut values: Vec<Values> = Vec::new();
    for v in vars {
        let dtype = v["dtype"].as_str().unwrap_or("float32");
        let shape: Vec<usize> = v["shape"]
            .as_array()
            .ok_or("variable without shape")?
            .iter()
            .map(|d| d.as_u64().unwrap_or(0) as usize)
            .collect();
        let mut flat = Vec::new();
        flatten(&v["value"], &mut flat)?;
        names.push(format!("{}\0", v["name"].as_str().unwrap_or("variable")));
        shapes.push(shape);
        values.push(Values::from_json(dtype, &flat));
    }

    let setup = || -> Result<(), Failure> {
        if let Some(ex) = case.get("exclude_from_weight_decay") {
            let patterns: Vec<String> = ex
                .get("var_names")
                .and_then(Value::as_array)
                .map_or(vec![], |a| a.iter().map(|p| format!("{}\0", p.as_str().unwrap_or(""))).collect());
            let pointers: Vec<*const c_char> = patterns.iter().map(|p| p.as_ptr().cast()).collect();
            let indices: Vec<usize> = ex
                .get("variables")
                .and_then(Value::as_array)
                .map_or(vec![], |a| a.iter().map(|i| i.as_u64().unwrap_or(u64::MAX) as usize).collect());
            // SAFETY: both arrays are live for the call and hold the stated counts.
            check(unsafe {
                adamw_optimizer_exclude_from_weight_decay(
                    opt.0,
                    indices.as_ptr(),
                    indices.len(),
                    pointers.as_ptr(),
                    pointers.len(),
                )
            })?;
        }
        if let Some(it) = case.get("iterations").and_then(Value::as_i64) {
            // SAFETY: live handle.
            check(unsafe { adamw_optimizer_set_iterations(opt.0, it) })?;
        }
        let descriptors: Vec<adamw_variable> = (0..vars.len())
            .map(|i| adamw_variable {
                name: names[i].as_ptr().cast(),
                dtype: values[i].dtype(),
                ndim: shapes[i].len(),
                shape: shapes[i].as_ptr(),
                data: values[i].ptr(),
                sharded: 0,
                shard_offset: 0,
                shard_len: 0,
            })
            .collect();
        // SAFETY: every descriptor points at live memory of the stated sizes.
        check(unsafe { adamw_optimizer_build(opt.0, descriptors.as_ptr(), descriptors.len()) })
    };
    if let Err(f) = setup() {
        return Ok(json!({"id": id, "error": error(json!("config"), f)}));
    }

    let mut results = Vec::new();
    let steps = case["steps"].as_array().ok_or("case without steps")?;
    for (n, step) in steps.iter().enumerate() {
        if step.get("op").and_then(Value::as_str) == Some("finalize") {
            let entries: Vec<adamw_variable_data> = values
                .iter_mut()
                .enumerate()
                .map(|(i, v)| adamw_variable_data { variable: i, dtype: v.dtype(), len: v.len(), data: v.ptr_mut() })
                .collect();
            // SAFETY: each entry points at its own live buffer.
            let finalize = |entries: &[adamw_variable_data]| unsafe {
                adamw_optimizer_finalize_variable_values(opt.0, entries.as_ptr(), entries.len())
            };
            let status = match settings.device {
                #[cfg(feature = "cuda")]
                Some((kind, ordinal)) if kind == adamw_device_kind::Cuda as u32 => {
                    // The variables as entries without gradients, copied to the GPU and back.
                    let as_entries: Vec<adamw_gradient> =
                        entries.iter().map(|v| without_gradient(v.variable, v.dtype, v.data, v.len)).collect();
                    on_gpu(ordinal, &as_entries, |d| {
                        let on_device: Vec<adamw_variable_data> = d
                            .iter()
                            .map(|e| adamw_variable_data {
                                variable: e.variable,
                                dtype: e.dtype,
                                len: e.len,
                                data: e.data,
                            })
                            .collect();
                        finalize(&on_device)
                    })?
                }
                _ => finalize(&entries),
            };
            if let Err(f) = check(status) {
                return Ok(json!({"id": id, "steps": results, "error": error(json!(n), f)}));
            }
            results
                .push(json!({"op": "finalize", "variables": values.iter().map(Values::to_json).collect::<Vec<_>>()}));
            continue;
        }
        let grads = step["grads"].as_array().ok_or("step without grads")?;
        // Gradient buffers live until the call returns.
        let mut dense: Vec<Option<Values>> = Vec::new();
        let mut sparse: Vec<Option<(Vec<i64>, Values)>> = Vec::new();
        for (i, g) in grads.iter().enumerate() {
            let dtype = vars[i]["dtype"].as_str().unwrap_or("float32");
            let (mut d, mut s) = (None, None);
            if let Some(dv) = g.get("dense") {
                let mut flat = Vec::new();
                flatten(dv, &mut flat)?;
                d = Some(Values::from_json(dtype, &flat));
            } else if let Some(iv) = g.get("indices") {
                let indices: Vec<i64> =
                    iv.as_array().ok_or("bad indices")?.iter().map(|x| x.as_i64().unwrap_or(-1)).collect();
                let mut flat = Vec::new();
                flatten(&g["values"], &mut flat)?;
                s = Some((indices, Values::from_json(dtype, &flat)));
            }
            dense.push(d);
            sparse.push(s);
        }
        let entries: Vec<adamw_gradient> = values
            .iter_mut()
            .enumerate()
            .map(|(i, v)| {
                let mut e = without_gradient(i, v.dtype(), v.ptr_mut(), v.len());
                if let Some(Some(d)) = dense.get(i) {
                    e.dense = d.ptr();
                } else if let Some(Some((idx, vals))) = sparse.get(i) {
                    e.indices = idx.as_ptr();
                    e.num_indices = idx.len();
                    e.values = vals.ptr();
                    e.num_values = vals.len();
                }
                e
            })
            .collect();
        let mut iterations = 0i64;
        // SAFETY: every entry points at live, distinct buffers of the stated lengths.
        let mut apply = |entries: &[adamw_gradient]| unsafe {
            adamw_optimizer_apply_gradients(opt.0, entries.as_ptr(), entries.len(), &mut iterations)
        };
        let status = match settings.device {
            #[cfg(feature = "cuda")]
            Some((kind, ordinal)) if kind == adamw_device_kind::Cuda as u32 => on_gpu(ordinal, &entries, apply)?,
            _ => apply(&entries),
        };
        if let Err(f) = check(status) {
            return Ok(json!({"id": id, "steps": results, "error": error(json!(n), f)}));
        }
        let mut lr = 0f32;
        // SAFETY: live handle, valid out-pointer.
        check(unsafe { adamw_optimizer_current_learning_rate(opt.0, &mut lr) }).map_err(|f| f.message)?;
        let mut result = json!({
            "iterations": iterations,
            "learning_rate": float_to_json(lr as f64),
            "variables": values.iter().map(Values::to_json).collect::<Vec<_>>(),
        });
        if scaled {
            let (scale, _) = loss_scale(&opt).map_err(|f| f.message)?;
            result["loss_scale"] = float_to_json(scale as f64);
        }
        results.push(result);
    }
    let mut last = final_state(&opt).map_err(|f| f.message)?;
    if scaled {
        let (scale, counter) = loss_scale(&opt).map_err(|f| f.message)?;
        last["loss_scale"] = json!({"current_loss_scale": float_to_json(scale as f64), "counter": counter});
    }
    Ok(json!({"id": id, "steps": results, "final": last}))
}

fn loss_scale(opt: &Optimizer) -> Result<(f32, i64), Failure> {
    let (mut scale, mut counter) = (0f32, 0i64);
    // SAFETY: live handle, valid out-pointers.
    check(unsafe { adamw_optimizer_loss_scale(opt.0, &mut scale, &mut counter) })?;
    Ok((scale, counter))
}

fn final_state(opt: &Optimizer) -> Result<Value, Failure> {
    let mut iterations = 0i64;
    let mut count = 0usize;
    // SAFETY: live handle, valid out-pointers.
    unsafe {
        check(adamw_optimizer_iterations(opt.0, &mut iterations))?;
        check(adamw_optimizer_num_variables(opt.0, &mut count))?;
    }
    let mut variables = Vec::new();
    for index in 0..count {
        let mut info = std::mem::MaybeUninit::<adamw_variable_info>::uninit();
        // SAFETY: live handle; `info` is written on OK.
        check(unsafe { adamw_optimizer_variable_info(opt.0, index, info.as_mut_ptr()) })?;
        // SAFETY: the call returned OK, so it wrote `info`.
        let info = unsafe { info.assume_init() };
        let json = match info.dtype {
            d if d == adamw_dtype::Int64 as u32 => {
                let mut v = vec![0i64; info.len];
                // SAFETY: `v` holds `info.len` int64s.
                check(unsafe { adamw_optimizer_get_variable(opt.0, index, d, v.as_mut_ptr().cast(), v.len()) })?;
                Value::Array(v.iter().map(|&x| float_to_json(x as f64)).collect())
            }
            d => {
                let mut v = Values::zeros(d, info.len);
                // SAFETY: `v` holds `info.len` elements of the variable's dtype.
                check(unsafe { adamw_optimizer_get_variable(opt.0, index, d, v.ptr_mut(), info.len) })?;
                v.to_json()
            }
        };
        variables.push(json);
    }
    let mut len = 0usize;
    // SAFETY: size query with a NULL buffer, then a buffer of len + 1 bytes.
    let config = unsafe {
        check(adamw_optimizer_get_config(opt.0, std::ptr::null_mut(), 0, &mut len))?;
        let mut buf = vec![0u8; len + 1];
        check(adamw_optimizer_get_config(opt.0, buf.as_mut_ptr().cast(), buf.len(), &mut len))?;
        serde_json::from_slice::<Value>(&buf[..len]).unwrap_or(Value::Null)
    };
    let mut m = Map::new();
    m.insert("iterations".into(), json!(iterations));
    m.insert("optimizer_variables".into(), Value::Array(variables));
    m.insert("config".into(), config);
    Ok(Value::Object(m))
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut threads = None;
    if let Some(i) = args.iter().position(|a| a == "--no-simd") {
        args.remove(i);
        adamw::set_simd_enabled(false);
    }
    if let Some(i) = args.iter().position(|a| a == "--simd") {
        args.remove(i);
        let name = if i < args.len() { args.remove(i) } else { String::new() };
        match adamw::SimdLevel::from_name(&name) {
            Some(level) => adamw::set_simd_level(Some(level)),
            None => {
                eprintln!("adamw-replay: --simd takes portable, avx2, avx512 or avx512bf16, not `{name}`");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(i) = args.iter().position(|a| a == "--threads") {
        args.remove(i);
        threads = Some(if i < args.len() { args.remove(i).parse::<u32>().unwrap_or(0) } else { 0 });
    }
    let mut device = None;
    if let Some(i) = args.iter().position(|a| a == "--device") {
        args.remove(i);
        let name = if i < args.len() { args.remove(i) } else { String::new() };
        device = match name.as_str() {
            "host-kernels" => Some((adamw_device_kind::HostKernels as u32, 0)),
            "cuda" => Some((adamw_device_kind::Cuda as u32, 0)),
            _ => match name.strip_prefix("cuda:").and_then(|n| n.parse::<u32>().ok()) {
                Some(ordinal) => Some((adamw_device_kind::Cuda as u32, ordinal)),
                None => {
                    eprintln!("adamw-replay: --device takes cuda, cuda:N or host-kernels, not {name:?}");
                    return ExitCode::from(2);
                }
            },
        };
    }
    let settings = Settings { threads, device };
    let mut input = String::new();
    let read = match args.first() {
        Some(path) => std::fs::read_to_string(path).map(|s| input = s),
        None => std::io::stdin().read_to_string(&mut input).map(|_| ()),
    };
    if let Err(e) = read {
        eprintln!("adamw-replay: cannot read the cases: {e}");
        return ExitCode::from(2);
    }
    let cases: Vec<Value> = match serde_json::from_str(&input) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("adamw-replay: the cases are not a JSON list: {e}");
            return ExitCode::from(2);
        }
    };
    let mut results = Vec::with_capacity(cases.len());
    for case in &cases {
        match run_case(case, &settings) {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!("adamw-replay: case {}: malformed case: {e}", case["id"]);
                return ExitCode::from(2);
            }
        }
    }
    println!("{}", Value::Array(results));
    ExitCode::SUCCESS
}
