//! Arbitrary bytes as a Keras file (.keras archive or .weights.h5): never a panic; what reads
//! can be written back into itself, and the written file reads back the same store.
#![no_main]
use adamw::keras_files;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = keras_files::read_bytes(data.to_vec()) else { return };
    let Ok(written) = keras_files::write_bytes(data.to_vec(), &file.store) else { return };
    let again = keras_files::read_bytes(written).expect("a file libadamw wrote reads back");
    assert_eq!(again.store.tensors.len(), file.store.tensors.len());
    for ((shape, values), (shape2, values2)) in file.store.tensors.iter().zip(&again.store.tensors) {
        assert_eq!(shape, shape2);
        assert_eq!(values.as_ref().to_le_bytes(), values2.as_ref().to_le_bytes());
    }
});
