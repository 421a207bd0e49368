//! papa-train
