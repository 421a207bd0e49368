//! Datasets: IDX and CSV loaders, validation split, per-member batching.
