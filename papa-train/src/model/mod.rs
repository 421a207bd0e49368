//! Population-batched models: specification, parameter layout, forward and backward.
