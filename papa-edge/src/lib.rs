//! papa-edge: deploy the averaged model (ONNX export, no_std runtime, FPGA images; not yet built).
