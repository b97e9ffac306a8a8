//! A sequence of C API calls decoded from the input: create, build with odd shapes and names,
//! dense and sparse steps with wrong lengths, out-of-range and duplicate indices, NaN and
//! infinities, set_weights, save and load, get_config, finalize, per-variable multipliers (NaN,
//! infinite, negative), weight_decay_min_ndim, resetting a variable, the step report and its
//! norms, Keras 3's gradient accumulation (with EMA a call must list every variable), adding a
//! variable after build, free. After every failed call
//! the optimizer must be unchanged (its checkpoint bytes, config and iterations). All buffers
//! are real memory of the lengths the calls state: the fuzzer varies what the library is told,
//! not whether the caller lies about its own memory.
#![no_main]
use std::ffi::c_void;

use adamw::ffi::*;
use libfuzzer_sys::fuzz_target;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn float(&mut self) -> f32 {
        match self.byte() % 8 {
            0 => f32::NAN,
            1 => f32::INFINITY,
            2 => -0.0,
            3 => 1e-40, // subnormal
            _ => (self.byte() as f32 - 128.0) / 16.0,
        }
    }
}

unsafe fn snapshot(opt: *mut adamw_optimizer) -> (Vec<u8>, Vec<u8>, i64) {
    let (mut len, mut it) = (0usize, 0i64);
    unsafe {
        adamw_optimizer_save_own_variables(opt, std::ptr::null_mut(), 0, &mut len);
        let mut bytes = vec![0u8; len];
        adamw_optimizer_save_own_variables(opt, bytes.as_mut_ptr(), len, &mut len);
        let mut clen = 0usize;
        adamw_optimizer_get_config(opt, std::ptr::null_mut(), 0, &mut clen);
        let mut config = vec![0u8; clen + 1];
        adamw_optimizer_get_config(opt, config.as_mut_ptr().cast(), config.len(), &mut clen);
        adamw_optimizer_iterations(opt, &mut it);
        (bytes, config, it)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut config = adamw_config_default();
    let flags = input.byte();
    config.amsgrad = flags & 1;
    config.use_ema = (flags >> 1) & 1;
    config.clipnorm = if flags & 4 != 0 { 1.0 } else { 0.0 };
    config.clipvalue = if flags & 8 != 0 { 0.5 } else { 0.0 };
    config.reject_non_finite_gradients = (flags >> 4) & 1;
    config.threads = ((flags >> 5) % 2) as u32; // 0 (the shared pool) or 1; a pool per input would only slow the fuzzer
    let mut opt: *mut adamw_optimizer = std::ptr::null_mut();
    // SAFETY: every pointer below is to live local memory of the stated length.
    unsafe {
        if adamw_optimizer_new(&config, &mut opt) != adamw_status::Ok {
            return;
        }
        // Keras' loss scaler, sometimes: dynamic or fixed, scales from 1 to near float32's top
        // (which a doubling overflows), growth after 0 to 3 steps. Refused with the guard on.
        let loss = input.byte();
        if loss & 1 != 0 {
            let scale = [1.0, 3.0, 65536.0, 1.0e38][(loss >> 2) as usize % 4];
            adamw_optimizer_set_loss_scale(opt, (loss >> 1) & 1, scale, ((loss >> 4) % 4) as i64);
        }
        // The extensions beyond Keras, sometimes: no decay below N dimensions, the report's norms.
        let extensions = input.byte();
        adamw_optimizer_set_weight_decay_min_ndim(opt, u32::from(extensions % 4) * 11); // 33 is refused
        adamw_optimizer_set_report_gradient_norms(opt, (extensions >> 2) % 3); // 2 is refused
        // Keras 3's gradient accumulation: 1 is refused, and so is any with a loss scale.
        adamw_optimizer_set_gradient_accumulation_steps(opt, i64::from(extensions >> 4) % 4);
        // Variables: 1-3, shapes from the input (some empty or odd).
        let count = 1 + input.byte() as usize % 3;
        let mut shapes: Vec<Vec<usize>> = (0..count).map(|_| (0..input.byte() % 3 + 1).map(|_| input.byte() as usize % 5).collect()).collect();
        shapes[0].insert(0, 1 + input.byte() as usize % 4); // at least one row
        let names: Vec<String> = (0..count).map(|i| format!("v{i}/{}\0", input.byte())).collect();
        let lens: Vec<usize> = shapes.iter().map(|s| s.iter().product()).collect();
        let mut values: Vec<Vec<f32>> = lens.iter().map(|&n| vec![0.5; n]).collect();
        let vars: Vec<adamw_variable> = (0..count)
            .map(|i| adamw_variable {
                name: names[i].as_ptr().cast(),
                dtype: adamw_dtype::Float32 as u32,
                ndim: shapes[i].len(),
                shape: shapes[i].as_ptr(),
                data: values[i].as_ptr().cast(),
                sharded: 0,
                shard_offset: 0,
                shard_len: 0,
            })
            .collect();
        if adamw_optimizer_build(opt, vars.as_ptr(), vars.len()) != adamw_status::Ok {
            adamw_optimizer_free(opt);
            return;
        }
        for _ in 0..16 {
            let before = snapshot(opt);
            let op = input.byte() % 10;
            let v = input.byte() as usize % (count + 1); // sometimes an unknown variable
            let target = v % count;
            let wrong = input.byte() % 4 == 0;
            let len = if wrong { lens[target] + 1 } else { lens[target] };
            let mut grad: Vec<f32> = (0..len).map(|_| input.float()).collect();
            let properties = |opt| {
                let mut p: adamw_variable_properties = std::mem::zeroed();
                let s = adamw_optimizer_variable_properties(opt, target, &mut p);
                (s, p.decayed, p.learning_rate_multiplier.to_bits(), p.weight_decay_multiplier.to_bits())
            };
            let properties_before = properties(opt);
            let status = match op {
                0 | 1 => {
                    let mut data = values[target].clone();
                    data.resize(len, 0.0);
                    let rows = shapes[target].first().copied().unwrap_or(1).max(1);
                    let row_len = lens[target] / rows;
                    let indices: Vec<i64> = (0..input.byte() % 4).map(|_| input.byte() as i64 % (rows as i64 + 2) - 1).collect();
                    let rows_values: Vec<f32> = (0..indices.len() * row_len + usize::from(wrong)).map(|_| input.float()).collect();
                    let mut e = adamw_gradient {
                        variable: v,
                        dtype: adamw_dtype::Float32 as u32,
                        data: data.as_mut_ptr().cast::<c_void>(),
                        len,
                        dense: std::ptr::null(),
                        indices: std::ptr::null(),
                        num_indices: 0,
                        values: std::ptr::null(),
                        num_values: 0,
                    };
                    if op == 0 {
                        e.dense = grad.as_mut_ptr().cast();
                    } else {
                        e.indices = indices.as_ptr();
                        e.num_indices = indices.len();
                        e.values = rows_values.as_ptr().cast();
                        e.num_values = rows_values.len();
                    }
                    let s = adamw_optimizer_apply_gradients(opt, &e, 1, std::ptr::null_mut());
                    if s == adamw_status::Ok {
                        values[target].copy_from_slice(&data[..lens[target]]);
                    } else {
                        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&data[..lens[target]]), bits(&values[target]), "a failed step wrote the variable");
                    }
                    s
                }
                2 => {
                    let (bytes, _, _) = &before;
                    let mut copy = bytes.clone();
                    if !copy.is_empty() && wrong {
                        let at = input.byte() as usize % copy.len();
                        copy[at] ^= 1 << (input.byte() % 8);
                    }
                    adamw_optimizer_load_own_variables(opt, copy.as_ptr(), copy.len())
                }
                3 => {
                    let it = [input.byte() as i64];
                    let shape = [len];
                    let weights = [
                        adamw_weight { dtype: adamw_dtype::Int64 as u32, ndim: 0, shape: std::ptr::null(), data: it.as_ptr().cast() },
                        adamw_weight { dtype: adamw_dtype::Float32 as u32, ndim: 1, shape: shape.as_ptr(), data: grad.as_ptr().cast() },
                    ];
                    adamw_optimizer_set_weights(opt, weights.as_ptr(), 1 + usize::from(input.byte() % 2 == 0))
                }
                4 => {
                    let mut data = values[target].clone();
                    data.resize(len, 0.0);
                    let d = adamw_variable_data { variable: v, dtype: adamw_dtype::Float32 as u32, data: data.as_mut_ptr().cast(), len };
                    let s = adamw_optimizer_finalize_variable_values(opt, &d, 1);
                    if s == adamw_status::Ok {
                        values[target].copy_from_slice(&data[..lens[target]]);
                    }
                    s
                }
                5 => {
                    let mut n = 0usize;
                    adamw_optimizer_get_config(opt, std::ptr::null_mut(), 0, &mut n)
                }
                6 => {
                    let (lr, wd) = (input.float() as f64, input.float() as f64);
                    adamw_optimizer_set_variable_multipliers(opt, v, lr, wd)
                }
                7 => {
                    // New values of the wrong length sometimes, or none (refused with EMA).
                    if input.byte() % 4 == 0 {
                        adamw_optimizer_reset_variable(opt, v, adamw_dtype::Float32 as u32, std::ptr::null(), 0)
                    } else {
                        adamw_optimizer_reset_variable(opt, v, adamw_dtype::Float32 as u32, grad.as_ptr().cast(), len)
                    }
                }
                8 => {
                    let mut report: adamw_step_report = std::mem::zeroed();
                    assert_eq!(adamw_optimizer_step_report(opt, &mut report), adamw_status::Ok);
                    let n = count + usize::from(wrong);
                    let mut norms = vec![0.0f64; n];
                    adamw_optimizer_gradient_norms(opt, norms.as_mut_ptr(), n)
                }
                _ => {
                    // A variable added after build: a name that exists (refused) or a new one,
                    // after which the sequence ends (the decoded indices assume `count`).
                    let fresh = input.byte() % 2 == 0;
                    let name: &[u8] = if fresh { b"added\0" } else { names[target].as_bytes() };
                    let shape = [2usize];
                    let data = [0.25f32, -0.5];
                    let added = adamw_variable {
                        name: name.as_ptr().cast(),
                        dtype: adamw_dtype::Float32 as u32,
                        ndim: 1,
                        shape: shape.as_ptr(),
                        data: data.as_ptr().cast(),
                        sharded: 0,
                        shard_offset: 0,
                        shard_len: 0,
                    };
                    let status = adamw_optimizer_add_variables(opt, &added, 1);
                    if status == adamw_status::Ok {
                        assert!(fresh, "a name that exists was added");
                        break;
                    }
                    status
                }
            };
            if status != adamw_status::Ok {
                assert!(snapshot(opt) == before, "a failed call (op {op}, status {status:?}) changed the optimizer");
                assert!(properties(opt) == properties_before, "a failed call (op {op}) changed the multipliers");
            }
            grad.clear();
        }
        adamw_optimizer_free(opt);
    }
});
