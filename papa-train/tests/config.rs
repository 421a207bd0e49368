//! Settings: model names, validation naming the key, the run-length-scaled PAPA pull.

use papa_model::zoo::Zoo;
use papa_train::config::{
    build_model, FromFirstEpoch, Method, TrainConfig, MIN_DEFAULT_ALPHA, PAPER_ALPHA,
    PAPER_APPLICATIONS,
};

#[test]
fn model_names() {
    let parse = |name: &str| name.parse::<Zoo>();
    assert_eq!(parse("cnn-s").unwrap(), Zoo::CnnS);
    assert_eq!(parse("mlp").unwrap(), Zoo::Mlp { hidden: vec![256] });
    assert_eq!(
        parse("mlp:64, 32").unwrap(),
        Zoo::Mlp {
            hidden: vec![64, 32]
        }
    );
    for bad in ["resnet", "mlp:", "mlp:0", "mlp:a,2"] {
        let message = build_model(bad, [1, 28, 28], 10).unwrap_err().to_string();
        assert!(
            message.contains("model") && message.contains(bad),
            "{bad}: {message}"
        );
    }
    // A model that does not fit the data names the layer and the shape.
    let message = build_model("cnn-s", [1, 1, 1], 10).unwrap_err().to_string();
    assert!(
        message.contains("layer 3") && message.contains("32 x 1 x 1"),
        "{message}"
    );
}

#[test]
fn methods_parse_from_their_names() {
    for m in Method::ALL {
        assert_eq!(m.name().parse::<Method>(), Ok(m));
        assert_eq!(m.to_string(), m.name());
    }
    let e = "papa-3".parse::<Method>().unwrap_err().to_string();
    assert!(e.contains("papa-3") && e.contains("papa-all"), "{e}");
}

#[test]
fn validation_names_the_key() {
    let bad = |cfg: TrainConfig, key: &str| {
        let message = cfg.validate().unwrap_err().to_string();
        assert!(message.contains(key), "{message:?} lacks {key}");
    };
    let ok = TrainConfig::default();
    ok.validate().unwrap();
    for (key, cfg) in [
        (
            "momentum",
            TrainConfig {
                momentum: f32::NAN,
                ..ok.clone()
            },
        ),
        (
            "momentum",
            TrainConfig {
                momentum: 5.0,
                ..ok.clone()
            },
        ),
        (
            "weight_decay",
            TrainConfig {
                weight_decay: -1.0,
                ..ok.clone()
            },
        ),
        (
            "weight_decay",
            TrainConfig {
                weight_decay: f32::INFINITY,
                ..ok.clone()
            },
        ),
        (
            "min_lr",
            TrainConfig {
                min_lr: f32::NAN,
                ..ok.clone()
            },
        ),
        (
            "min_lr",
            TrainConfig {
                min_lr: -1.0,
                ..ok.clone()
            },
        ),
        (
            "val_fraction",
            TrainConfig {
                val_fraction: 1.0,
                ..ok.clone()
            },
        ),
    ] {
        bad(cfg, key);
    }
    bad(
        TrainConfig {
            population: 0,
            ..ok.clone()
        },
        "population",
    );
    bad(
        TrainConfig {
            epochs: 0,
            ..ok.clone()
        },
        "epochs",
    );
    bad(
        TrainConfig {
            batch: 1,
            ..ok.clone()
        },
        "batch",
    );
    bad(
        TrainConfig {
            methods: vec![],
            ..ok.clone()
        },
        "methods",
    );
    bad(
        TrainConfig {
            lr: f32::NAN,
            ..ok.clone()
        },
        "lr",
    );
    bad(
        TrainConfig {
            papa_alpha: Some(1.5),
            ..ok.clone()
        },
        "papa_alpha",
    );
    bad(
        TrainConfig {
            grid_strength: 1.5,
            ..ok.clone()
        },
        "grid_strength",
    );
    bad(
        TrainConfig {
            papa_every_steps: 0,
            ..ok.clone()
        },
        "papa_every_steps",
    );
    // Only the methods that average every few epochs have a first averaging to move.
    bad(
        TrainConfig {
            papa_from_first_epoch: FromFirstEpoch::Methods(vec![Method::Papa2, Method::Papa]),
            ..ok.clone()
        },
        "papa_from_first_epoch",
    );
    bad(
        TrainConfig {
            model: "vgg".into(),
            ..ok
        },
        "model",
    );
}

/// `papa_from_first_epoch` reads as a bool (both methods or neither: the files and run
/// directories written before it took a list) or as a list, and writes back what it read.
#[test]
fn the_first_averaging_is_set_per_method() {
    let read = |text: &str| toml::from_str::<TrainConfig>(text).unwrap();
    for (text, papa_all, papa_2) in [
        ("papa_from_first_epoch = true", true, true),
        ("papa_from_first_epoch = false", false, false),
        ("papa_from_first_epoch = [\"papa-all\"]", true, false),
        (
            "papa_from_first_epoch = [\"papa-2\", \"papa-all\"]",
            true,
            true,
        ),
        ("papa_from_first_epoch = []", false, false),
        // The default: each method's variant chosen on validation.
        ("", false, true),
    ] {
        let cfg = read(text);
        cfg.validate().unwrap();
        let first = &cfg.papa_from_first_epoch;
        assert_eq!(
            (
                first.applies_to(Method::PapaAll),
                first.applies_to(Method::Papa2)
            ),
            (papa_all, papa_2),
            "{text:?}"
        );
        assert_eq!(read(&cfg.to_toml().unwrap()), cfg, "{text:?}");
    }
    let err = toml::from_str::<TrainConfig>("papa_from_first_epoch = \"papa-all\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("papa_from_first_epoch"), "{err}");
}

#[test]
fn toml_overrides_defaults_and_refuses_unknown_keys() {
    let cfg: TrainConfig = toml::from_str("population = 7\nmethods = [\"papa-2\"]\n").unwrap();
    assert_eq!(
        (cfg.population, cfg.methods.clone()),
        (7, vec![Method::Papa2])
    );
    assert_eq!(cfg.epochs, TrainConfig::default().epochs);
    let err = toml::from_str::<TrainConfig>("popualtion = 7\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("popualtion"), "{err}");
}

/// Layered files: a later file's keys win, keys it leaves out keep the earlier file's value,
/// and a bad key is reported with the file that holds it, not the last one.
#[test]
fn config_files_layer_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (base, variant) = (
        dir.path().join("base.toml"),
        dir.path().join("variant.toml"),
    );
    std::fs::write(&base, "epochs = 12\npopulation = 5\nmodel = \"cnn-s\"\n").unwrap();
    std::fs::write(&variant, "population = 3\nsame_init = true\n").unwrap();
    let cfg = TrainConfig::from_files(&[&base, &variant]).unwrap();
    assert_eq!(
        (
            cfg.epochs,
            cfg.population,
            cfg.model.as_str(),
            cfg.same_init
        ),
        (12, 3, "cnn-s", true)
    );
    let swapped = TrainConfig::from_files(&[&variant, &base]).unwrap();
    assert_eq!(swapped.population, 5);
    assert_eq!(
        TrainConfig::from_files::<&std::path::Path>(&[]).unwrap(),
        TrainConfig::default()
    );
    std::fs::write(&base, "epochs = \"twelve\"\n").unwrap();
    let err = TrainConfig::from_files(&[&base, &variant])
        .unwrap_err()
        .to_string();
    assert!(err.contains("base.toml") && err.contains("epochs"), "{err}");
}

/// The shipped replica recipe loads and differs from the defaults exactly in the replica's
/// keys (docs/DESIGN-NOTES.md, "The PyTorch replica's recipe as config keys").
#[test]
fn replica_config_sets_the_replicas_keys() {
    use papa_train::augment::{ErasingBox, MixPartner};
    use papa_train::config::{AfterAveraging, CropFill, MinLrAt, StepPhase};
    use papa_train::data::NormalizeOver;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/replica.toml");
    let cfg = TrainConfig::from_file(&path).unwrap();
    cfg.validate().unwrap();
    let expected = TrainConfig {
        model: "cnn-s".into(),
        augmentation: papa_train::config::Augmentation::Grid,
        same_init: false,
        val_indices: Some("configs/replica-val-indices.txt".into()),
        normalize_over: NormalizeOver::TrainFile,
        crop_fill: CropFill::Zero,
        mix_partner: MixPartner::Reversed,
        erasing_box: ErasingBox::OneClamped,
        min_lr_at: MinLrAt::AfterLastStep,
        papa_alpha: Some(0.99),
        papa_step_phase: StepPhase::Epoch,
        papa_from_first_epoch: FromFirstEpoch::Both(true),
        after_averaging: AfterAveraging::ResetBatchnorm,
        calibration_batch: 500,
        ..TrainConfig::default()
    };
    assert_eq!(format!("{cfg:?}"), format!("{expected:?}"));
}

/// The default pull keeps the paper's half-life as a fraction of the run: after the whole run
/// without training, the distance to the mean shrinks by the same factor as in the paper's
/// 20,000 applications of a = 0.99, until the pull reaches its floor in very short runs.
#[test]
fn the_pull_follows_the_run_length() {
    let cfg = TrainConfig::default();
    for steps in [5_050usize, 200_000] {
        let applications = steps as f64 / f64::from(cfg.papa_every_steps);
        let a = f64::from(cfg.papa_alpha(steps));
        let whole_run = a.powf(applications).ln();
        let paper = PAPER_APPLICATIONS * PAPER_ALPHA.ln();
        assert!(
            (whole_run - paper).abs() <= 1e-4 * paper.abs(),
            "{steps} steps: a = {a}"
        );
    }
    assert!((cfg.papa_alpha(200_000) - 0.99).abs() < 1e-6);
    // 27 applications would give a = 0.99^740 ~ 6e-4: the floor holds it at one half.
    assert_eq!(f64::from(cfg.papa_alpha(270)), MIN_DEFAULT_ALPHA);
    let a = f64::from(cfg.papa_alpha(4_000));
    assert!(a > MIN_DEFAULT_ALPHA && a < 0.65, "4000 steps: a = {a}");
    let fixed = TrainConfig {
        papa_alpha: Some(0.9),
        ..cfg
    };
    assert_eq!(fixed.papa_alpha(10), 0.9);
}
