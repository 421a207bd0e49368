//! `papa eval`: a saved model's test accuracy, from the model file alone.

use crate::error::CliError;
use papa_train::checkpoint::load_model;
use papa_train::data;
use papa_train::eval::accuracy;
use std::path::Path;

/// Rebuilds the model from its card, loads its dataset's test split (the card's, unless
/// `data_source` names another), normalises it as the training run did and measures it.
pub fn run(path: &Path, data_source: Option<&str>) -> Result<(), CliError> {
    let model = load_model(path)?;
    let card = &model.card;
    let spec = card.spec()?;
    if let Some(i) = model.params.iter().position(|v| !v.is_finite()) {
        // In range: the spec's tensors tile the vector the file filled.
        let tensor = spec.tensors().iter().find(|t| t.range().contains(&i));
        return Err(CliError::NonFinite {
            path: path.into(),
            tensor: tensor.map_or_else(String::new, |t| t.name.clone()),
            value: model.params[i],
        });
    }
    let provenance = card.provenance.as_ref();
    let source = match (data_source, provenance) {
        (Some(s), _) => s.to_string(),
        (None, Some(p)) => p.dataset.clone(),
        (None, None) => return Err(CliError::NoDataset { path: path.into() }),
    };
    // The test split is the test file; the validation split's settings do not change it.
    let (val_fraction, seed) = provenance.map_or((0.1, 0), |p| (p.val_fraction, p.seed));
    let mut splits = data::load(&source, val_fraction, seed)?;
    let test = &splits.test;
    let data_shape = [test.channels, test.height, test.width, test.classes];
    let model_shape = [
        card.input.channels,
        card.input.height,
        card.input.width,
        card.classes.count,
    ];
    if data_shape != model_shape {
        return Err(CliError::DataDoesNotFit {
            path: path.into(),
            data: source,
            model: model_shape,
            found: data_shape,
        });
    }
    if splits.pixel_scale != card.input.pixel_scale {
        return Err(CliError::PixelScale {
            path: path.into(),
            model: card.input.pixel_scale,
            data: source,
            found: splits.pixel_scale,
        });
    }
    // The training run's normalisation, not one recomputed here: the same bits go in.
    splits.test.normalize_with(&card.normalization)?;
    let acc = accuracy(&spec, &model.params, &splits.test)?;
    out!(
        "{}: test accuracy {:.2}% on {} samples of {source}",
        path.display(),
        acc.members[0],
        splits.test.len()
    )?;
    if let Some(p) = provenance {
        out!("recorded at training time: {}%", p.test_accuracy)?;
    }
    Ok(())
}
