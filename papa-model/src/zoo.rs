//! The named models: what `--model cnn-s` or `mlp:512,256` means.

use crate::layer::Layer;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// A named model of the zoo.
///
/// ```
/// use papa_model::zoo::Zoo;
/// let mlp: Zoo = "mlp:64,32".parse()?;
/// assert_eq!(mlp, Zoo::Mlp { hidden: vec![64, 32] });
/// assert_eq!(mlp.to_string(), "mlp:64,32");
/// assert_eq!(mlp.layers(10).len(), 6); // flatten, 2 x (linear, relu), linear
/// assert!("resnet".parse::<Zoo>().is_err());
/// # Ok::<(), papa_model::zoo::UnknownModel>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Zoo {
    /// The small CNN of the published comparison (see [`cnn_s`]).
    CnnS,
    /// `Flatten - [Linear - ReLU]* - Linear`, one hidden layer per entry of `hidden`.
    Mlp {
        /// Widths of the hidden layers.
        hidden: Vec<usize>,
    },
}

impl Zoo {
    /// The layers for `classes` outputs.
    pub fn layers(&self, classes: usize) -> Vec<Layer> {
        match self {
            Zoo::CnnS => cnn_s(classes).to_vec(),
            Zoo::Mlp { hidden } => mlp(hidden, classes),
        }
    }
}

/// `conv3x3(C->32) - BN - ReLU - maxpool2 - conv3x3(32->64) - BN - ReLU - maxpool2 - flatten -
/// linear(->128) - ReLU - linear(->classes)`.
pub const fn cnn_s(classes: usize) -> [Layer; 12] {
    [
        Layer::conv3x3(32),
        Layer::BatchNorm,
        Layer::Relu,
        Layer::max_pool2(),
        Layer::conv3x3(64),
        Layer::BatchNorm,
        Layer::Relu,
        Layer::max_pool2(),
        Layer::Flatten,
        Layer::Linear { out_features: 128 },
        Layer::Relu,
        Layer::Linear {
            out_features: classes,
        },
    ]
}

/// `Flatten - [Linear(h) - ReLU]* - Linear(classes)`.
pub fn mlp(hidden: &[usize], classes: usize) -> Vec<Layer> {
    let mut layers = vec![Layer::Flatten];
    for &out_features in hidden {
        layers.extend([Layer::Linear { out_features }, Layer::Relu]);
    }
    layers.push(Layer::Linear {
        out_features: classes,
    });
    layers
}

/// A name that is not a model of the zoo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownModel {
    /// The name given.
    pub name: String,
}

impl fmt::Display for UnknownModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown model `{}` (expected cnn-s, mlp or mlp:W1,W2,... with positive widths)",
            self.name
        )
    }
}

impl core::error::Error for UnknownModel {}

impl core::str::FromStr for Zoo {
    type Err = UnknownModel;

    /// `cnn-s`, `mlp` (one hidden layer of 256) or `mlp:W1,W2,...`.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownModel { name: name.into() };
        match name {
            "cnn-s" => Ok(Zoo::CnnS),
            "mlp" => Ok(Zoo::Mlp { hidden: vec![256] }),
            _ => name
                .strip_prefix("mlp:")
                .ok_or_else(unknown)?
                .split(',')
                .map(|w| w.trim().parse::<usize>().ok().filter(|&w| w > 0))
                .collect::<Option<Vec<_>>>()
                .map(|hidden| Zoo::Mlp { hidden })
                .ok_or_else(unknown),
        }
    }
}

impl fmt::Display for Zoo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zoo::CnnS => write!(f, "cnn-s"),
            Zoo::Mlp { hidden } => {
                write!(f, "mlp:")?;
                for (i, w) in hidden.iter().enumerate() {
                    write!(f, "{}{w}", if i == 0 { "" } else { "," })?;
                }
                Ok(())
            }
        }
    }
}
