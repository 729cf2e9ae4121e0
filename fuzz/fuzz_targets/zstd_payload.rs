//! An untrusted zstd frame decoded into a buffer of the declared length: never more memory than
//! declared, never a panic, and a success means exactly the declared number of bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vain_kernels::encode::zstd_decompress_into;

fuzz_target!(|data: &[u8]| {
    let [a, b, frame @ ..] = data else { return };
    let declared = usize::from(u16::from_le_bytes([*a, *b]));
    let mut out = vec![0u8; declared];
    let _ = zstd_decompress_into(frame, &mut out);
});
