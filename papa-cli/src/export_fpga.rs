//! `papa export --format fpga`: the int8 model (calibrated as the flash image is) as the
//! memory files, parameter header and golden vectors of papa-edge/fpga's RTL, written to
//! the `--out` directory as a whole (a temporary directory renamed into place).

use super::{calibration_images, test_images, ExportArgs, Precision};
use crate::error::CliError;
use papa_edge::fpga;
use papa_edge::onnx;
use papa_model::file::ModelFile;
use papa_train::checkpoint::write_atomic;
use std::fs;

pub(super) fn run(args: &ExportArgs, model: &ModelFile) -> Result<(), CliError> {
    let export_error = |source| CliError::Export {
        path: args.model.clone(),
        source,
    };
    let fpga_error = |source| CliError::Fpga {
        path: args.model.clone(),
        source,
    };
    // The blocks are integer hardware: an f32 request is refused, not quietly made int8.
    if args.precision == Precision::F32 {
        return Err(fpga_error(fpga::FpgaError::Precision(
            papa_edge::flash::Precision::F32,
        )));
    }
    let (images, source) = calibration_images(args, model)?;
    let calibration = onnx::calibrate(model, &images).map_err(export_error)?;
    let q = onnx::quantize(model, &calibration).map_err(export_error)?;
    let (stored, _) = test_images(&source, model, args.golden_samples)?;
    let samples = fpga::stored_bytes(&stored).map_err(fpga_error)?;
    let export = fpga::export(&q, &samples).map_err(fpga_error)?;

    // Written beside --out, then renamed over it: a reader never sees half an export.
    let out = &args.out;
    let mut tmp = out.clone().into_os_string();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let create = |path: &std::path::Path| {
        fs::create_dir_all(path).map_err(|source| CliError::CreateDir {
            path: path.to_path_buf(),
            source,
        })
    };
    create(&tmp.join("golden"))?;
    for f in &export.files {
        write_atomic(&tmp.join(&f.path), f.text.as_bytes())?;
    }
    if out.exists() {
        fs::remove_dir_all(out).map_err(|source| CliError::Remove {
            path: out.clone(),
            source,
        })?;
    }
    fs::rename(&tmp, out).map_err(|source| CliError::CreateDir {
        path: out.clone(),
        source,
    })?;
    let plan = &export.plan;
    let macs: usize = plan.layers.iter().map(fpga::LayerPlan::taps).sum();
    out!(
        "{}: FPGA export, int8 calibrated on {} training images of {source}: {} layers, {} weights, arena {} bytes, {} kernel taps per inference; golden vectors of {} test images (model.vh, *.mem, golden/)",
        out.display(),
        calibration.samples,
        plan.layers.len(),
        plan.weights,
        plan.arena,
        macs,
        export.golden.len()
    )
}
