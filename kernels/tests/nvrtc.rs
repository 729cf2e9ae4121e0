//! Every CUDA kernel source compiles with NVRTC (compute_90, --fmad=false). Needs libnvrtc only,
//! not a GPU or a driver, so CI can run it on any Linux machine with the NVRTC wheel installed.
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
    let compiled = match cuda::compile_all() {
        Ok(c) => c,
        Err(e) => panic!("NVRTC: {e}"),
    };
    let names: Vec<&str> = compiled.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, ["decode.cu", "reduce.cu", "robust.cu", "noise.cu"]);
    for (name, len) in compiled {
        assert!(len > 1000, "{name}: only {len} bytes of PTX");
        eprintln!("{name}: {len} bytes of PTX");
    }
}
