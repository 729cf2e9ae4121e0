//! Benchmarks live in `benches/` (`cargo bench -p vain-bench`); this library is empty on purpose.
