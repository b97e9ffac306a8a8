//! Arbitrary bytes as config JSON (and as a serialized schedule): never a panic; an accepted
//! config round-trips exactly through get_config / from_config, and an accepted loss scale
//! (LossScaleOptimizer configs, nested ones and hostile numbers among the seeds) is one libadamw
//! can train with: a normal positive float32 scale, and a growth of at least one step.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(opt) = adamw::Optimizer::from_config_json(&text) {
        if let Some(l) = opt.config().loss_scale {
            let scale = l.initial_scale as f32;
            assert!(scale.is_normal() && scale > 0.0, "accepted initial_scale {}", l.initial_scale);
            assert!(!l.dynamic || l.dynamic_growth_steps >= 1, "accepted growth {}", l.dynamic_growth_steps);
        }
        let first = opt.get_config();
        let again = adamw::Optimizer::from_config_json(&first.to_string()).expect("get_config must load");
        assert_eq!(first, again.get_config(), "get_config -> from_config -> get_config changed the config");
    }
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
        if let Ok(schedule) = adamw::Schedule::deserialize(&value) {
            let _ = schedule.evaluate(3);
            assert_eq!(adamw::Schedule::deserialize(&schedule.serialize()).as_ref(), Ok(&schedule));
        }
    }
});
