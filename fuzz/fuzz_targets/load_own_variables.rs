//! Checkpoints into optimizers of every kind: float32/float64 with amsgrad and EMA, without a
//! loss scale, with a fixed one and with a dynamic one; bfloat16 and float16 variables with
//! float32 masters; bfloat16 without. The input picks the loading optimizer, the optimizer that
//! saved (after one step), and whether the checkpoint is that optimizer's own bytes with some
//! bytes changed or arbitrary bytes. Never a panic; a rejected load leaves the optimizer
//! byte-identical (its checkpoint and loss scale); an accepted one never changes a fixed loss
//! scale, leaves a dynamic one a normal positive float32, and never crosses variable dtypes or
//! master copies.
#![no_main]
use adamw::{Config, DType, Gradient, GradientEntry, LossScale, Optimizer, TensorMut, TensorRef, VariableSpec};
use libfuzzer_sys::fuzz_target;

const KINDS: u8 = 6;

/// Kind 0..3: float32 [2, 3] and float64 [3] with amsgrad and EMA (no loss scale, a fixed 4, a
/// dynamic 4 growing every 2 steps); 3, 4: bfloat16 / float16 [4] with masters and float32 [2]
/// (a dynamic scale on the bfloat16 one); 5: bfloat16 [4] and float32 [2] without masters.
fn optimizer(kind: u8) -> Optimizer {
    let wide = kind < 3;
    let loss_scale = match kind {
        1 => Some(LossScale { dynamic: false, initial_scale: 4.0, dynamic_growth_steps: 1 }),
        2 | 3 => Some(LossScale { dynamic: true, initial_scale: 4.0, dynamic_growth_steps: 2 }),
        _ => None,
    };
    let config = Config { amsgrad: wide, use_ema: wide, master_weights: kind == 3 || kind == 4, loss_scale, ..Config::default() };
    let mut opt = Optimizer::new(config).unwrap();
    if wide {
        let init = [0.5f32; 6];
        opt.build(&[VariableSpec::new("w", DType::F32, &[2, 3]), VariableSpec::new("b", DType::F64, &[3])], &[
            TensorRef::F32(&init),
            TensorRef::F64(&[0.25; 3]),
        ])
        .unwrap();
        let (mut w, mut b) = (init, [0.25f64; 3]);
        let mut u = [
            GradientEntry { variable: 0, values: TensorMut::F32(&mut w), gradient: Some(Gradient::Dense(TensorRef::F32(&[0.1; 6]))) },
            GradientEntry { variable: 1, values: TensorMut::F64(&mut b), gradient: Some(Gradient::Dense(TensorRef::F64(&[0.2; 3]))) },
        ];
        opt.apply_gradients(&mut u[..]).unwrap();
    } else {
        let dtype = if kind == 4 { DType::F16 } else { DType::BF16 };
        let bits = [0x3c00u16; 4]; // only copied at build: the dtype of the bits does not matter here
        let small = [1.0f32, 2.0];
        let initial = match dtype {
            DType::F16 => TensorRef::F16(bytemuck_f16(&bits)),
            _ => TensorRef::BF16(bytemuck_bf16(&bits)),
        };
        opt.build(&[VariableSpec::new("e", dtype, &[4]), VariableSpec::new("b", DType::F32, &[2])], &[
            initial,
            TensorRef::F32(&small),
        ])
        .unwrap();
    }
    opt
}

fn bytemuck_f16(bits: &[u16; 4]) -> &[half::f16] {
    // SAFETY: half::f16 is a transparent u16.
    unsafe { std::slice::from_raw_parts(bits.as_ptr().cast(), bits.len()) }
}

fn bytemuck_bf16(bits: &[u16; 4]) -> &[half::bf16] {
    // SAFETY: half::bf16 is a transparent u16.
    unsafe { std::slice::from_raw_parts(bits.as_ptr().cast(), bits.len()) }
}

fn observed(opt: &Optimizer) -> (Vec<u8>, Option<(f32, i64)>) {
    (opt.save_own_variables().unwrap(), opt.loss_scale())
}

fuzz_target!(|data: &[u8]| {
    let [loading, saving, mode, rest @ ..] = data else { return };
    let (loading, saving) = (loading % KINDS, saving % KINDS);
    let mut opt = optimizer(loading);
    let checkpoint = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        // The saving optimizer's own checkpoint, with bytes changed: pairs of (position, xor).
        let mut bytes = optimizer(saving).save_own_variables().unwrap();
        for pair in rest.chunks_exact(3) {
            let at = u16::from_le_bytes([pair[0], pair[1]]) as usize;
            if let Some(b) = bytes.get_mut(at) {
                *b ^= pair[2];
            }
        }
        bytes
    };
    let before = observed(&opt);
    match opt.load_own_variables(&checkpoint) {
        Err(_) => assert!(before == observed(&opt), "a rejected load changed the optimizer"),
        Ok(()) => {
            match (opt.config().loss_scale, opt.loss_scale()) {
                (Some(l), Some((scale, _))) if !l.dynamic => assert_eq!(scale, 4.0, "a load rewrote a fixed loss scale"),
                (Some(_), Some((scale, counter))) => assert!(scale.is_normal() && scale > 0.0 && counter >= 0),
                _ => {}
            }
            // Kinds 3, 4 and 5 differ only in their 16-bit variable's dtype or master copy.
            let sixteen = |k: u8| k >= 3;
            if mode % 2 == 1 && rest.is_empty() && sixteen(loading) && sixteen(saving) {
                assert_eq!(loading, saving, "a checkpoint of another kind of 16-bit variable loaded");
            }
        }
    }
});
