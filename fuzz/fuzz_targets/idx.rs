//! An MNIST IDX image or label file (plain or gzip) from an untrusted source (`--data`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use vain_learn::data::{self, MAX_BYTES, PIXELS};

fuzz_target!(|bytes: &[u8]| {
    let p = Path::new("fuzz.idx");
    if let Ok(images) = data::parse_images(bytes, p) {
        assert_eq!(images.len() % PIXELS, 0);
        assert!(images.len() as u64 <= MAX_BYTES);
    }
    if let Ok(labels) = data::parse_labels(bytes, p) {
        assert!(labels.iter().all(|&l| usize::from(l) < data::CLASSES));
    }
    // Split the input in two and parse it as a pair.
    let mid = bytes.len() / 2;
    if let Ok(ds) = data::parse_pair((&bytes[..mid], p), (&bytes[mid..], p)) {
        assert_eq!(ds.images.len(), ds.labels.len() * PIXELS);
    }
});
