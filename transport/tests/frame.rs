//! The incremental decoder agrees with the whole-buffer codec for any split of the stream.

use proptest::prelude::*;
use vain_schema::{Limits, frame as wire_frame};
use vain_transport::frame::{Decoder, Error};

fn sample_frame(header_len: usize, payload_len: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let header: Vec<u8> = (0..header_len).map(|i| (i * 7 + 1) as u8).collect();
    let payload: Vec<u8> = (0..payload_len).map(|i| (i * 13 + 5) as u8).collect();
    let f = wire_frame::encode(&header, &payload).expect("encode");
    (header, payload, f)
}

#[test]
fn whole_frame_in_one_push() {
    let (h, p, f) = sample_frame(100, 1000);
    let mut d = Decoder::new(Limits::default());
    d.push(&f).expect("push");
    let frame = d.finish().expect("complete");
    assert_eq!(frame.header, h);
    assert_eq!(frame.payload.as_slice(), &p[..]);
    assert_eq!(frame.payload.as_slice().as_ptr() as usize % 64, 0);
}

#[test]
fn truncation_trailing_bytes_and_padding_are_typed_errors() {
    let (_, _, f) = sample_frame(10, 50);
    for (cut, stage) in [(5, "preamble"), (30, "header"), (40, "padding"), (f.len() - 1, "payload")] {
        let mut d = Decoder::new(Limits::default());
        d.push(&f[..cut]).expect("push");
        match d.finish() {
            Err(Error::Truncated { stage: s, .. }) => assert_eq!(s, stage, "cut at {cut}"),
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    let mut d = Decoder::new(Limits::default());
    let mut g = f.clone();
    g.push(1);
    assert!(matches!(d.push(&g), Err(Error::TrailingBytes { extra: 1 })));
    let mut g = f.clone();
    g[24 + 10 + 3] = 9;
    let mut d = Decoder::new(Limits::default());
    assert!(matches!(d.push(&g), Err(Error::Padding)));
    assert!(matches!(d.push(&[0]), Err(Error::Finished)), "a failed decoder stays failed");
}

#[test]
fn oversized_declarations_are_refused_before_allocation() {
    let limits = Limits { max_header_bytes: 64, max_payload_bytes: 1 << 20, ..Limits::default() };
    let big_header = vain_schema::frame::Preamble { header_len: 65, payload_len: 0 }.encode();
    let mut d = Decoder::new(limits.clone());
    assert!(matches!(d.push(&big_header), Err(Error::Preamble(vain_schema::Error::TooLarge { .. }))));
    let big_payload = vain_schema::frame::Preamble { header_len: 8, payload_len: u64::MAX }.encode();
    let mut d = Decoder::new(limits);
    assert!(matches!(d.push(&big_payload), Err(Error::Preamble(vain_schema::Error::TooLarge { .. }))));
}

proptest! {
    #[test]
    fn any_split_of_the_stream_decodes_the_same(
        hl in 1usize..300, pl in 0usize..3000, cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8)
    ) {
        let (h, p, f) = sample_frame(hl, pl);
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(f.len() + 1)).collect();
        points.push(0);
        points.push(f.len());
        points.sort_unstable();
        let mut d = Decoder::new(Limits::default());
        for w in points.windows(2) {
            d.push(&f[w[0]..w[1]]).expect("push");
        }
        let frame = d.finish().expect("complete");
        prop_assert_eq!(frame.header, h);
        prop_assert_eq!(frame.payload.as_slice(), &p[..]);
    }

    #[test]
    fn garbage_never_panics(data in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut d = Decoder::new(Limits::default());
        let _ = d.push(&data);
        let _ = d.finish();
    }
}

#[test]
fn pooled_decoders_reuse_buffers_and_show_no_stale_bytes() {
    let pool = vain_transport::buf::Pool::new(Default::default());
    let (h1, p1, f1) = sample_frame(40, 70_000);
    let mut d = Decoder::with_pool(Limits::default(), pool.clone());
    d.push(&f1).expect("push");
    let first = d.finish().expect("complete");
    assert_eq!((first.header.as_slice(), first.payload.as_slice()), (&h1[..], &p1[..]));
    drop(first);
    // A shorter payload in the reused buffer: exactly its own bytes, aligned.
    let (h2, _, _) = sample_frame(40, 0);
    let p2: Vec<u8> = (0..69_000u32).map(|i| (i % 251) as u8).collect();
    let f2 = wire_frame::encode(&h2, &p2).expect("encode");
    let mut d = Decoder::with_pool(Limits::default(), pool.clone());
    for chunk in f2.chunks(1000) {
        d.push(chunk).expect("push");
    }
    let second = d.finish().expect("complete");
    assert_eq!(second.payload.as_slice(), &p2[..]);
    assert_eq!(second.payload.as_slice().as_ptr() as usize % 64, 0);
    let s = pool.stats();
    assert_eq!((s.reused, s.allocated), (1, 1));
}
