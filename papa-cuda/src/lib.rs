//! papa-cuda: PAPA rules and population training as PTX kernels on one or more GPUs (not yet built).
