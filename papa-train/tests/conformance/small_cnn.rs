// Included (`include!`) by the conformance suite and by tests/model.rs, so that both check
// the same network; the includer has `Layer` and `ModelSpec` in scope.

/// A CNN with every op the zoo uses (3 x 3 convs, BatchNorm, ReLU, max pooling, dense),
/// small enough for f64 references and finite differences: 2 x 8 x 8 inputs, 3 classes.
fn small_cnn() -> ModelSpec {
    let layers = [
        Layer::conv3x3(4),
        Layer::BatchNorm,
        Layer::Relu,
        Layer::max_pool2(),
        Layer::conv3x3(5),
        Layer::BatchNorm,
        Layer::Relu,
        Layer::max_pool2(),
        Layer::Flatten,
        Layer::Linear { out_features: 6 },
        Layer::Relu,
        Layer::Linear { out_features: 3 },
    ];
    ModelSpec::new(&layers, [2, 8, 8], 3).unwrap()
}
