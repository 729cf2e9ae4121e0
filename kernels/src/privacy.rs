//! Rényi-DP accountant for the sampled Gaussian mechanism (being written).
