//! Benchmarks of ringkv against named peers; see `benches/`.
