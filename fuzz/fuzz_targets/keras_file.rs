//! Arbitrary bytes as a Keras file (.keras archive or .weights.h5; seeds with LossScaleOptimizers,
//! nested ones and hostile loss scales): never a panic; what reads can be written back into
//! itself, and the written file reads back the same store; an archive's config that from_config
//! accepts has a loss scale libadamw can train with.
#![no_main]
use adamw::keras_files;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = keras_files::read_bytes(data.to_vec()) else { return };
    if let Some(Ok(opt)) = file.optimizer_config.as_deref().map(adamw::Optimizer::from_config_json) {
        if let Some(l) = opt.config().loss_scale {
            assert!((l.initial_scale as f32).is_normal() && l.initial_scale > 0.0);
            assert!(!l.dynamic || l.dynamic_growth_steps >= 1);
        }
    }
    let Ok(written) = keras_files::write_bytes(data.to_vec(), &file.store) else { return };
    let again = keras_files::read_bytes(written).expect("a file libadamw wrote reads back");
    assert_eq!(again.store.tensors.len(), file.store.tensors.len());
    for ((shape, values), (shape2, values2)) in file.store.tensors.iter().zip(&again.store.tensors) {
        assert_eq!(shape, shape2);
        assert_eq!(values.as_ref().to_le_bytes(), values2.as_ref().to_le_bytes());
    }
});
