//! The bias corrections use `tf.pow` on scalars, which is glibc's `powf` and not always
//! `f32(pow(f64, f64))`. `tests/data/beta_power_exceptions.json` lists, per beta, every step
//! up to `t_max_checked` where the two differ, with TF's bits. Our pow must give TF's bits at
//! every one of those steps and `f32(pow(f64(f32(beta)), t))` at all the others.

use adamw::float::{Ftz, Real};
use serde_json::Value;

#[test]
fn beta_powers_match_tensorflow_at_every_step_checked() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/beta_power_exceptions.json");
    let text = std::fs::read_to_string(path).expect("tests/data/beta_power_exceptions.json is missing");
    let data: Value = serde_json::from_str(&text).unwrap();
    let hex = |v: &Value| u32::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    let mut checked = 0usize;
    for (beta, entry) in data["by_beta"].as_object().unwrap() {
        let beta_f32 = Ftz::<_>::new(f32::cast(beta.parse::<f64>().unwrap()));
        let t_max = entry["t_max_checked"].as_u64().unwrap();
        let exceptions: std::collections::HashMap<u64, u32> =
            entry["exceptions"].as_array().unwrap().iter().map(|e| (e[0].as_u64().unwrap(), hex(&e[1]))).collect();
        for t in 1..=t_max {
            let ours = beta_f32.pow(Ftz::<_>::new(t as f32)).get().to_bits();
            let expected = exceptions
                .get(&t)
                .copied()
                .unwrap_or_else(|| (((beta_f32.get() as f64).powf(t as f64)) as f32).flush().to_bits());
            assert_eq!(ours, expected, "beta {beta}, t {t}: {ours:#x} vs TF {expected:#x}");
            checked += 1;
        }
        assert!(!exceptions.is_empty());
    }
    assert!(checked > 300_000);
}
