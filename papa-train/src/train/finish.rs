//! The end of a run: the candidates for the one model to ship (soups, with and without
//! REPAIR), its choice on validation accuracy, and the method's result.

use super::surgery::Surgery;
use super::{Run, State, TrainError};
use crate::engine::Engine;
use crate::eval::{population_accuracy, EvalError, PopulationAccuracy};
use crate::model;
use crate::report::{Accuracy, MethodResult, Validation};
use papa_core::population::Contiguous;
use papa_core::soup::{greedy_soup, GreedyBuffers};

/// A candidate final model and its accuracies.
struct Scored {
    name: &'static str,
    model: Vec<f32>,
    val: f32,
    test: f32,
}

/// The greedy soup: its weights over the members and its size.
struct Greedy {
    model: Vec<f32>,
    weights: Vec<f32>,
    kept: usize,
}

/// Members, ensemble, soups with and without REPAIR, and the one model to ship: the
/// candidate with the best validation accuracy (ties keep the earlier, simpler one).
pub(super) fn finish<E: Engine>(
    run: &Run<'_>,
    engine: &mut E,
    surgery: &mut Surgery,
    params: &[f32],
    state: &State,
) -> Result<(MethodResult, Vec<f32>), TrainError> {
    let p = run.p;
    let test_acc = population_accuracy(engine, &run.splits.test)?;
    let val_acc = population_accuracy(engine, &run.splits.val)?;
    let uniform = run.uniform_soup(engine, surgery)?;
    let uniform_repaired = repaired(surgery, params, &vec![1.0 / p as f32; p], &uniform)?;
    let greedy = greedy(run, surgery, params)?;
    let greedy_repaired = repaired(surgery, params, &greedy.weights, &greedy.model)?;
    let candidates = [
        ("uniform soup", uniform),
        ("uniform soup + REPAIR", uniform_repaired),
        ("greedy soup", greedy.model),
        ("greedy soup + REPAIR", greedy_repaired),
    ];
    let mut scored = Vec::new();
    for (name, model) in candidates {
        let val = surgery.accuracy(&model, &run.splits.val)?.members[0];
        let test = surgery.accuracy(&model, &run.splits.test)?.members[0];
        scored.push(Scored {
            name,
            model,
            val,
            test,
        });
    }
    let best = (0..scored.len()).fold(0, |b, i| if scored[i].val > scored[b].val { i } else { b });
    let result = assemble(
        run,
        state,
        &test_acc,
        &val_acc,
        &scored,
        (best, greedy.kept),
    );
    let model = std::mem::take(&mut scored[best].model);
    Ok((result, model))
}

/// `soup` REPAIRed towards the members `params` combined with `weights`.
fn repaired(
    surgery: &mut Surgery,
    params: &[f32],
    weights: &[f32],
    soup: &[f32],
) -> Result<Vec<f32>, TrainError> {
    let mut child = soup.to_vec();
    surgery.repair(&mut child, params, &[weights.to_vec()])?;
    Ok(child)
}

/// The greedy soup on validation accuracy. papa-core scores the P members first, then
/// soups of several members: only those need BatchNorm statistics of their own (a member's
/// trained ones are better than a few calibration batches).
fn greedy(run: &Run<'_>, surgery: &mut Surgery, params: &[f32]) -> Result<Greedy, TrainError> {
    let (p, n) = (run.p, run.n);
    let tensors = run.spec.tensor_specs();
    let opts = model::rule_options(&tensors)?;
    let (mut order, mut scores, mut weights) = (vec![0; p], vec![0.0; p], vec![0.0; p]);
    let (mut candidate, mut model) = (vec![0.0; n], vec![0.0; n]);
    let mut failure: Option<EvalError> = None;
    let mut calls = 0;
    let eval_val = |w: &[f32]| -> f32 {
        calls += 1;
        let mut soup = w.to_vec();
        let statistics = match calls > p {
            true => surgery.reestimate(&mut soup),
            false => Ok(()),
        };
        match statistics.and_then(|()| surgery.accuracy(&soup, &run.splits.val)) {
            Ok(acc) => acc.members[0],
            Err(e) => {
                failure = Some(e);
                f32::NAN
            }
        }
    };
    let buffers = GreedyBuffers {
        order: &mut order,
        scores: &mut scores,
        candidate: &mut candidate,
        out: &mut model,
        weights: &mut weights,
    };
    let outcome = greedy_soup(&Contiguous::new(params, p)?, eval_val, buffers, &opts);
    if let Some(e) = failure {
        return Err(e.into());
    }
    let kept = outcome?.kept;
    if kept > 1 {
        surgery.reestimate(&mut model)?;
    }
    Ok(Greedy {
        model,
        weights,
        kept,
    })
}

/// The method's result from the members' accuracies, the scored candidates (uniform,
/// uniform + REPAIR, greedy, greedy + REPAIR), the chosen one and the greedy soup's size.
fn assemble(
    run: &Run<'_>,
    state: &State,
    test_acc: &PopulationAccuracy,
    val_acc: &PopulationAccuracy,
    scored: &[Scored],
    (best, greedy_size): (usize, usize),
) -> MethodResult {
    let p = run.p;
    let best_member = (0..p).fold(0, |b, j| {
        if val_acc.members[j] > val_acc.members[b] {
            j
        } else {
            b
        }
    });
    let members = &test_acc.members;
    MethodResult {
        method: run.method.name().into(),
        seed: run.cfg.seed,
        population: p,
        epochs: run.cfg.epochs,
        model: run.cfg.model.clone(),
        members: members.clone(),
        members_mean: members.iter().sum::<f32>() / p as f32,
        members_min: members.iter().copied().fold(f32::INFINITY, f32::min),
        members_max: members.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        best_member_on_val: members[best_member],
        ensemble: test_acc.ensemble,
        uniform_soup: Accuracy {
            plain: scored[0].test,
            repaired: Some(scored[1].test),
        },
        greedy_soup: Accuracy {
            plain: scored[2].test,
            repaired: Some(scored[3].test),
        },
        greedy_soup_size: greedy_size,
        final_model: scored[best].test,
        final_model_is: scored[best].name.into(),
        validation: Validation {
            members: val_acc.members.clone(),
            final_model: scored[best].val,
        },
        wall_seconds: 0.0,
        cpu_path: run.path.clone(),
        history: state.history.clone(),
    }
}
