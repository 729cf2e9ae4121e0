//! The incremental frame decoder fed in chunks whose sizes come from the input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vain_schema::Limits;
use vain_transport::frame::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else { return };
    let step = usize::from(step).max(1);
    let limits = Limits { max_header_bytes: 1 << 16, max_payload_bytes: 1 << 20, ..Limits::default() };
    let mut d = Decoder::new(limits);
    for chunk in rest.chunks(step) {
        if d.push(chunk).is_err() {
            return;
        }
    }
    if let Ok(f) = d.finish() {
        assert_eq!(f.payload.as_slice().as_ptr() as usize % 64, 0);
    }
});
