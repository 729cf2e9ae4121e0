//! Every CUDA kernel source compiles with NVRTC (--fmad=false) for the GPUs operators run:
//! A100 (compute_80), A10 / RTX 30 (compute_86), L4 / L40S (compute_89), H100 / H200
//! (compute_90). Needs libnvrtc only, not a GPU or a driver, so CI can run it on any Linux
//! machine with the NVRTC wheel installed.
#![cfg(feature = "cuda")]

use vain_kernels::cuda;

#[test]
fn every_kernel_compiles() {
    if !cuda::nvrtc_present() {
        vain_testkit::unavailable(
            vain_testkit::Need::Nvrtc,
            "nvrtc: every kernel compiles",
            "libnvrtc not found: install the pip wheel `nvidia-cuda-nvrtc==13.0.88` and put its \
             `nvidia/cu13/lib` directory on LD_LIBRARY_PATH",
        );
        return;
    }
    for arch in ["compute_80", "compute_86", "compute_89", "compute_90"] {
        let compiled = match cuda::compile_all(arch) {
            Ok(c) => c,
            Err(e) => panic!("NVRTC for {arch}: {e}"),
        };
        let names: Vec<&str> = compiled.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["decode.cu", "reduce.cu", "robust.cu", "noise.cu"]);
        for (name, len) in compiled {
            assert!(len > 1000, "{arch} {name}: only {len} bytes of PTX");
            eprintln!("{arch} {name}: {len} bytes of PTX");
        }
    }
}
