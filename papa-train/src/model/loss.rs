//! Soft-target cross-entropy and accuracy over `P x B x classes` logits.

use super::Error;
use papa_core::LengthMismatch;

/// Soft-target cross-entropy of every member (mixup, cutmix and label smoothing give
/// probability rows as targets).
///
/// `logits`, `targets` and `dlogits` are `P x B x classes` with `P = losses.len()`.
/// Writes each member's loss, the mean over its batch of `-sum_k t_k log softmax(z)_k`, to
/// `losses`, and its gradient with respect to the logits to `dlogits`
/// (`(softmax(z) * sum_k t_k - t) / B`, PyTorch's `cross_entropy` with probability targets).
pub fn soft_cross_entropy(
    logits: &[f32],
    targets: &[f32],
    classes: usize,
    dlogits: &mut [f32],
    losses: &mut [f32],
) -> Result<(), Error> {
    let (p, len) = (losses.len(), logits.len());
    let per_member = if p == 0 || classes == 0 { 0 } else { len / p };
    if per_member == 0 || per_member % classes != 0 || per_member * p != len {
        return Err(Error::Length(LengthMismatch {
            what: "logits (P x B x classes)",
            expected: p.max(1) * classes.max(1),
            found: len,
        }));
    }
    if targets.len() != len {
        return Err(Error::Length(LengthMismatch {
            what: "targets",
            expected: len,
            found: targets.len(),
        }));
    }
    if dlogits.len() != len {
        return Err(Error::Length(LengthMismatch {
            what: "dlogits",
            expected: len,
            found: dlogits.len(),
        }));
    }
    let batch = per_member / classes;
    let scale = 1.0 / batch as f64;
    let members = logits
        .chunks_exact(per_member)
        .zip(targets.chunks_exact(per_member));
    for ((zm, tm), (dm, loss)) in
        members.zip(dlogits.chunks_exact_mut(per_member).zip(losses.iter_mut()))
    {
        let mut total = 0.0f64;
        for ((z, t), d) in zm
            .chunks_exact(classes)
            .zip(tm.chunks_exact(classes))
            .zip(dm.chunks_exact_mut(classes))
        {
            // Log-sum-exp shifted by the max so that large logits do not overflow.
            let max = z.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v)) as f64;
            let sum_exp: f64 = z.iter().map(|&v| (v as f64 - max).exp()).sum();
            let lse = max + sum_exp.ln();
            let t_sum: f64 = t.iter().map(|&v| v as f64).sum();
            for ((&zi, &ti), di) in z.iter().zip(t).zip(d.iter_mut()) {
                let log_p = zi as f64 - lse;
                total -= ti as f64 * log_p;
                *di = ((log_p.exp() * t_sum - ti as f64) * scale) as f32;
            }
        }
        *loss = (total * scale) as f32;
    }
    Ok(())
}

/// Index of the first largest value (PyTorch's `argmax`); 0 for an empty row.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Correct predictions per member: `correct[m]` counts the samples whose argmax logit is
/// the label. `logits` is `P x B x classes` (`P = correct.len()`); `labels` holds `B` labels
/// shared by all members, or `P x B` (one batch per member).
pub fn count_correct(
    logits: &[f32],
    classes: usize,
    labels: &[usize],
    correct: &mut [usize],
) -> Result<(), Error> {
    let p = correct.len();
    let rows = logits.len().checked_div(classes).unwrap_or(0);
    if p == 0 || rows == 0 || rows * classes != logits.len() || !rows.is_multiple_of(p) {
        return Err(Error::Length(LengthMismatch {
            what: "logits (P x B x classes)",
            expected: p.max(1) * classes.max(1),
            found: logits.len(),
        }));
    }
    let batch = rows / p;
    if labels.len() != batch && labels.len() != rows {
        return Err(Error::Length(LengthMismatch {
            what: "labels",
            expected: batch,
            found: labels.len(),
        }));
    }
    for (m, c) in correct.iter_mut().enumerate() {
        *c = (0..batch)
            .filter(|&s| {
                argmax(&logits[(m * batch + s) * classes..][..classes])
                    == labels[(m * batch + s) % labels.len()]
            })
            .count();
    }
    Ok(())
}
