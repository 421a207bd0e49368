//! The model description against independent computations: layouts tile the vector, shapes
//! follow PyTorch's formulas, the no-alloc view plans what the owned spec plans, the card
//! round-trips and refuses what it cannot read.

use papa_core::layout::Layout;
use papa_core::rng::Rng;
use papa_model::card::{CardError, ModelCard, Normalization};
use papa_model::layer::{Layer, Shape};
use papa_model::plan::Op;
use papa_model::view::ModelView;
use papa_model::{zoo, ModelError, ModelSpec};
use proptest::prelude::*;

/// PyTorch's output size of a window over `size` (`torch.nn.Conv2d`'s formula, dilation 1).
fn torch_out(size: usize, kernel: usize, stride: usize, padding: usize) -> i64 {
    (size as i64 + 2 * padding as i64 - kernel as i64).div_euclid(stride as i64) + 1
}

fn layer() -> impl Strategy<Value = Layer> {
    prop_oneof![
        (1usize..5, 1usize..4, 1usize..3, 0usize..2).prop_map(|(o, k, s, p)| Layer::Conv2d {
            out_channels: o,
            kernel: k,
            stride: s,
            padding: p,
        }),
        Just(Layer::BatchNorm),
        Just(Layer::Relu),
        (1usize..3, 1usize..3).prop_map(|(k, s)| Layer::MaxPool2d {
            kernel: k,
            stride: s
        }),
        Just(Layer::Flatten),
        (1usize..6).prop_map(|o| Layer::Linear { out_features: o }),
    ]
}

proptest! {
    /// Whatever the stack, a buildable model's tensors tile 0..N in order, every conv and
    /// pool output follows PyTorch's formula, and the view plans the same ops.
    #[test]
    fn plans_tile_the_vector_and_follow_pytorch(
        layers in proptest::collection::vec(layer(), 0..7),
        c in 1usize..3, h in 1usize..7, w in 1usize..7,
    ) {
        let mut layers = layers;
        layers.extend([Layer::Flatten, Layer::Linear { out_features: 3 }]);
        let Ok(spec) = ModelSpec::new(&layers, [c, h, w], 3) else { return Ok(()) };
        let specs = spec.tensor_specs();
        let layout = Layout::new(&specs).unwrap();
        prop_assert_eq!(layout.len(), spec.len());
        for op in spec.ops() {
            if let Op::Conv(conv) = op {
                prop_assert_eq!(conv.out_h as i64, torch_out(conv.h, conv.kernel, conv.stride, conv.padding));
                prop_assert_eq!(conv.out_w as i64, torch_out(conv.w, conv.kernel, conv.stride, conv.padding));
                prop_assert_eq!(conv.bias, conv.weight + conv.cout * conv.cin * conv.kernel * conv.kernel);
            }
            if let Op::MaxPool { c, h, w, kernel, stride } = *op {
                let out = torch_out(h, kernel, stride, 0) * torch_out(w, kernel, stride, 0);
                prop_assert_eq!(op.out_len() as i64, c as i64 * out);
            }
        }
        // Each op reads what the one before writes.
        for pair in spec.ops().windows(2) {
            prop_assert_eq!(pair[0].out_len(), pair[1].in_len());
        }
        let input = Shape::Spatial { channels: c, height: h, width: w };
        let params = vec![0.0; spec.len()];
        let view = ModelView::<16>::new(&layers, input, 3, &params).unwrap();
        prop_assert_eq!(view.ops(), spec.ops());
    }

    /// PyTorch's bound U(-1/sqrt(fan_in), 1/sqrt(fan_in)), BatchNorm's defaults, and the same
    /// member for the same seed.
    #[test]
    fn initialisation_is_pytorchs_and_seeded(seed in any::<u64>()) {
        let spec = ModelSpec::new(&zoo::cnn_s(10), [1, 8, 8], 10).unwrap();
        let mut a = vec![f32::NAN; spec.len()];
        spec.init_member(&mut Rng::new(seed), &mut a).unwrap();
        for t in spec.tensors() {
            let values = &a[t.range()];
            let fan_in = |name: &str| spec.find(&format!("{}.weight", name)).unwrap().shape[1..].iter().product::<usize>();
            let (layer, part) = t.name.split_once('.').unwrap();
            match (layer.starts_with("bn"), part) {
                (true, "weight" | "running_var") => prop_assert!(values.iter().all(|&v| v == 1.0)),
                (true, _) => prop_assert!(values.iter().all(|&v| v == 0.0)),
                (false, _) => {
                    // The exact bound, widened by the f32 roundings of the bound and of
                    // bound * (2u - 1) (a few ulps; a value outside by more is a wrong fan-in).
                    let bound = 1.0 / (fan_in(layer) as f64).sqrt() * (1.0 + 4.0 * f64::from(f32::EPSILON));
                    prop_assert!(values.iter().all(|&v| f64::from(v).abs() <= bound), "{}", t.name);
                    prop_assert!(values.iter().any(|&v| v != 0.0));
                }
            }
        }
        let mut b = vec![0.0; spec.len()];
        spec.init_member(&mut Rng::new(seed), &mut b).unwrap();
        prop_assert_eq!(a, b);
    }
}

#[test]
fn the_small_cnn_has_the_published_layout() {
    let spec = ModelSpec::new(&zoo::cnn_s(10), [1, 28, 28], 10).unwrap();
    assert_eq!(spec.len(), 422_028);
    let names: Vec<&str> = spec.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(&names[..3], ["conv1.weight", "conv1.bias", "bn1.weight"]);
    assert_eq!(spec.find("fc1.weight").unwrap().shape, [128, 64 * 7 * 7]);
    assert_eq!(
        spec.find("bn1.num_batches_tracked").unwrap().shape,
        Vec::<usize>::new()
    );
    let repairable: Vec<_> = spec
        .repairable()
        .map(|l| (l.weight.as_str(), l.batch_norm.as_deref()))
        .collect();
    assert_eq!(
        repairable,
        [
            ("conv1.weight", Some("bn1")),
            ("conv2.weight", Some("bn2")),
            ("fc1.weight", None)
        ]
    );
}

#[test]
fn bad_models_are_typed_errors() {
    let e = ModelSpec::new(&zoo::cnn_s(10), [1, 28, 28], 0).unwrap_err();
    assert_eq!(e, ModelError::ZeroClasses);
    assert_eq!(
        ModelSpec::new(&zoo::mlp(&[4], 2), [0, 2, 2], 2).unwrap_err(),
        ModelError::EmptyInput
    );
    let e = ModelSpec::new(&[Layer::Linear { out_features: 2 }], [1, 2, 2], 2).unwrap_err();
    assert!(
        matches!(e, ModelError::LayerDoesNotFit { index: 0, .. }),
        "{e}"
    );
    let e = ModelSpec::new(&[Layer::Flatten], [1, 2, 2], 3).unwrap_err();
    assert!(
        matches!(e, ModelError::WrongOutput { classes: 3, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("4 features"), "{e}");
    let huge = [
        Layer::Flatten,
        Layer::Linear {
            out_features: usize::MAX / 2,
        },
        Layer::Linear { out_features: 2 },
    ];
    assert!(ModelSpec::new(&huge, [1, 2, 2], 2).is_err());
    let params = [0.0; 4 * 3 + 3];
    let layers = [Layer::Flatten, Layer::Linear { out_features: 3 }];
    let input = Shape::Spatial {
        channels: 1,
        height: 2,
        width: 2,
    };
    assert!(matches!(
        ModelView::<1>::new(&layers, input, 3, &params),
        Err(ModelError::TooManyLayers { capacity: 1 })
    ));
    assert!(matches!(
        ModelView::<4>::new(&layers, input, 3, &params[1..]),
        Err(ModelError::Length(_))
    ));
}

#[test]
fn the_card_round_trips_and_refuses_what_it_cannot_read() {
    let spec = ModelSpec::new(&zoo::cnn_s(10), [1, 28, 28], 10).unwrap();
    let norm = Normalization {
        mean: vec![0.2860405],
        std: vec![0.3530242],
    };
    let names: Vec<String> = (0..10).map(|i| format!("class {i}")).collect();
    let card = ModelCard::new("cnn-s", &spec, 255.0, norm, names);
    let json = card.to_json().unwrap();
    let back = ModelCard::from_json(&json).unwrap();
    assert_eq!(back, card);
    assert_eq!(
        back.to_json().unwrap(),
        json,
        "the same card, the same bytes"
    );
    assert_eq!(back.spec().unwrap(), spec);

    let newer = json.replacen("\"format_version\":1", "\"format_version\":2", 1);
    assert!(matches!(
        ModelCard::from_json(&newer),
        Err(CardError::Version { found: 2 })
    ));
    let unknown = json.replacen("\"name\"", "\"nickname\":\"x\",\"name\"", 1);
    assert!(matches!(
        ModelCard::from_json(&unknown),
        Err(CardError::Json(_))
    ));
    let mut names_short = card.clone();
    names_short.classes.names.pop();
    assert!(matches!(names_short.spec(), Err(CardError::Length(_))));
    let mut other_layers = card.clone();
    other_layers.layers[0] = Layer::conv3x3(16);
    assert!(matches!(
        other_layers.spec(),
        Err(CardError::Layout { index: 0 })
    ));
}
