//! The unwind guard around every entry point: no panic crosses into C, and every failure
//! becomes a status plus the message `adamw_last_error` returns.

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::status::{FfiError, adamw_status};

/// Runs an entry point's body: maps its error, or a panic, to a status and records the message.
/// Recording happens inside the unwind boundary too, and the panic payload is leaked rather than
/// dropped (a payload's destructor could itself panic), so nothing can unwind into C.
pub(crate) fn guard(body: impl FnOnce() -> Result<(), FfiError>) -> adamw_status {
    let outcome = catch_unwind(AssertUnwindSafe(|| match body() {
        Ok(()) => adamw_status::Ok,
        Err(e) => e.record(),
    }));
    match outcome {
        Ok(status) => status,
        Err(payload) => {
            let payload = std::mem::ManuallyDrop::new(payload);
            let report = catch_unwind(AssertUnwindSafe(|| {
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                FfiError::new(adamw_status::Internal, format!("internal error (please report): {what}")).record()
            }));
            report.unwrap_or(adamw_status::Internal)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_the_internal_status_with_a_message() {
        let status = guard(|| panic!("boom"));
        assert_eq!(status, adamw_status::Internal);
        let mut buf = [0u8; 128];
        let mut len = 0;
        // SAFETY: buf holds 128 writable bytes; len is a valid out-pointer.
        unsafe { super::super::status::adamw_last_error(buf.as_mut_ptr().cast(), buf.len(), &mut len) };
        assert_eq!(&buf[..len], b"internal error (please report): boom");
    }
}
