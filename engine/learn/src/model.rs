//! The models, named and versioned, with a parameter layout shared by the wire, safetensors and
//! the aggregation kernels.
//!
//! A model's parameters are its tensors sorted by name; the flat vector the kernels aggregate is
//! their concatenation in that order, which is also the order `vain aggregate` and the ingest
//! layout use. Names and shapes are PyTorch's (`nn.Linear` weight `[out, in]`, `nn.Conv2d`
//! weight `[out, in, kh, kw]`), so a checkpoint saved here loads into the equivalent PyTorch
//! module with `load_state_dict(safetensors.torch.load_file(...))` unchanged.
//!
//! The *layout digest* is BLAKE3 `derive_key("vain 2026 model layout v1", …)` over the model id,
//! version and every tensor's name, shape and dtype: two parties agree on a model iff their
//! digests are equal.

use crate::Error;
use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Uniform};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use vain_ingest::TensorLayout;
use vain_schema::delta::DType as WireDType;

/// Mean and standard deviation of MNIST's pixels (÷ 255), the usual input normalisation.
pub const PIXEL_MEAN: f32 = 0.1307;
/// See [`PIXEL_MEAN`].
pub const PIXEL_STD: f32 = 0.3081;

/// The model architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// 784-128-10 perceptron with ReLU (101,770 parameters).
    MnistMlp,
    /// conv 5×5×16 → pool → conv 5×5×32 → pool → dense 512-128-10, ReLU (80,202 parameters).
    MnistCnn,
}

impl Arch {
    /// Every architecture.
    pub const ALL: [Arch; 2] = [Arch::MnistMlp, Arch::MnistCnn];

    /// The model id carried on the wire.
    pub fn id(self) -> &'static str {
        match self {
            Arch::MnistMlp => "mnist-mlp",
            Arch::MnistCnn => "mnist-cnn",
        }
    }

    /// Layout version: bumped whenever a name or shape changes.
    pub fn version(self) -> u32 {
        1
    }

    /// The tensors, sorted by name, with their shapes and fan-in (for initialisation).
    pub fn tensors(self) -> Vec<(&'static str, Vec<usize>, usize)> {
        match self {
            Arch::MnistMlp => vec![
                ("fc1.bias", vec![128], 784),
                ("fc1.weight", vec![128, 784], 784),
                ("fc2.bias", vec![10], 128),
                ("fc2.weight", vec![10, 128], 128),
            ],
            Arch::MnistCnn => vec![
                ("conv1.bias", vec![16], 25),
                ("conv1.weight", vec![16, 1, 5, 5], 25),
                ("conv2.bias", vec![32], 400),
                ("conv2.weight", vec![32, 16, 5, 5], 400),
                ("fc1.bias", vec![128], 512),
                ("fc1.weight", vec![128, 512], 512),
                ("fc2.bias", vec![10], 128),
                ("fc2.weight", vec![10, 128], 128),
            ],
        }
    }

    /// Parameters.
    pub fn dim(self) -> usize {
        self.tensors().iter().map(|(_, s, _)| s.iter().product::<usize>()).sum()
    }

    /// The ingest layout: tensors in flat order, f32.
    pub fn layout(self) -> Vec<TensorLayout> {
        self.tensors()
            .into_iter()
            .map(|(n, s, _)| TensorLayout {
                name: n.into(),
                shape: s.iter().map(|&d| d as u64).collect(),
                dtype: WireDType::F32,
            })
            .collect()
    }

    /// The layout digest (module docs).
    pub fn layout_digest(self) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key("vain 2026 model layout v1");
        h.update(&(self.id().len() as u64).to_le_bytes());
        h.update(self.id().as_bytes());
        h.update(&self.version().to_le_bytes());
        for (name, shape, _) in self.tensors() {
            h.update(&(name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update(&(shape.len() as u64).to_le_bytes());
            for d in shape {
                h.update(&(d as u64).to_le_bytes());
            }
            h.update(b"f32");
        }
        *h.finalize().as_bytes()
    }

    /// Range of the flat vector holding the tensors whose names start with `prefix`.
    pub fn range_of(self, prefix: &str) -> std::ops::Range<usize> {
        let mut start = None;
        let mut end = 0;
        let mut at = 0;
        for (name, shape, _) in self.tensors() {
            let n: usize = shape.iter().product();
            if name.starts_with(prefix) {
                start.get_or_insert(at);
                end = at + n;
            }
            at += n;
        }
        start.unwrap_or(0)..end
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for Arch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Arch::ALL.into_iter().find(|a| a.id() == s).ok_or_else(|| Error::UnknownModel(s.to_string()))
    }
}

/// A model's parameters as candle variables (trainable), in [`Arch::tensors`] order.
pub struct Model {
    arch: Arch,
    vars: Vec<Var>,
    device: Device,
}

impl Model {
    /// PyTorch's default initialisation (uniform ±1/√fan-in for weights and biases), seeded.
    pub fn init(arch: Arch, seed: u64, device: &Device, dtype: DType) -> Result<Model, Error> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut flat = Vec::with_capacity(arch.dim());
        for (_, shape, fan_in) in arch.tensors() {
            let bound = 1.0 / (fan_in as f32).sqrt();
            let u = Uniform::new_inclusive(-bound, bound).map_err(|_| Error::Shape { what: "initialisation bound" })?;
            flat.extend((0..shape.iter().product::<usize>()).map(|_| u.sample(&mut rng)));
        }
        Model::from_flat(arch, &flat, device, dtype)
    }

    /// A model with the given flat parameters.
    pub fn from_flat(arch: Arch, flat: &[f32], device: &Device, dtype: DType) -> Result<Model, Error> {
        if flat.len() != arch.dim() {
            return Err(Error::Dim { model: arch.id(), expected: arch.dim(), got: flat.len() });
        }
        let mut vars = Vec::new();
        let mut at = 0;
        for (_, shape, _) in arch.tensors() {
            let n: usize = shape.iter().product();
            let t = Tensor::from_slice(&flat[at..at + n], shape.as_slice(), device)?.to_dtype(dtype)?;
            vars.push(Var::from_tensor(&t)?);
            at += n;
        }
        Ok(Model { arch, vars, device: device.clone() })
    }

    /// The architecture.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The trainable variables, in layout order.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// The flat parameter vector (f32).
    pub fn flat(&self) -> Result<Vec<f32>, Error> {
        let mut out = Vec::with_capacity(self.arch.dim());
        for v in &self.vars {
            out.extend(v.as_tensor().flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// Overwrites the parameters with `flat`.
    pub fn set_flat(&self, flat: &[f32]) -> Result<(), Error> {
        if flat.len() != self.arch.dim() {
            return Err(Error::Dim { model: self.arch.id(), expected: self.arch.dim(), got: flat.len() });
        }
        let mut at = 0;
        for v in &self.vars {
            let n = v.as_tensor().elem_count();
            let t = Tensor::from_slice(&flat[at..at + n], v.as_tensor().shape(), &self.device)?.to_dtype(v.dtype())?;
            v.set(&t)?;
            at += n;
        }
        Ok(())
    }

    /// Logits for a batch `x` of normalised images, shape `[batch, 784]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, Error> {
        let v = |i: usize| self.vars[i].as_tensor();
        let dense =
            |x: &Tensor, w: &Tensor, b: &Tensor| -> candle_core::Result<Tensor> { x.matmul(&w.t()?)?.broadcast_add(b) };
        Ok(match self.arch {
            Arch::MnistMlp => {
                let h = dense(x, v(1), v(0))?.relu()?;
                dense(&h, v(3), v(2))?
            }
            Arch::MnistCnn => {
                let b = x.dim(0)?;
                let x = x.reshape((b, 1, 28, 28))?;
                let x = x.conv2d(v(1), 0, 1, 1, 1)?.broadcast_add(&v(0).reshape((1, 16, 1, 1))?)?.relu()?;
                let x = max_pool2(&x)?;
                let x = x.conv2d(v(3), 0, 1, 1, 1)?.broadcast_add(&v(2).reshape((1, 32, 1, 1))?)?.relu()?;
                let x = max_pool2(&x)?;
                let x = x.flatten_from(1)?;
                let h = dense(&x, v(5), v(4))?.relu()?;
                dense(&h, v(7), v(6))?
            }
        })
    }

    /// Saves as safetensors (f32), with the model id, version and layout digest as metadata.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        save_flat(self.arch, &self.flat()?, path)
    }

    /// Loads a checkpoint written by [`Model::save`] or [`save_flat`] (or by PyTorch with the same
    /// names and shapes); every tensor must be present with its shape, and no other.
    pub fn load(arch: Arch, path: &Path, device: &Device, dtype: DType) -> Result<Model, Error> {
        Model::from_flat(arch, &load_flat(arch, path)?, device, dtype)
    }
}

/// 2×2 max pooling with stride 2. candle 0.11's `max_pool2d` backward divides the gradient of
/// each window's maximum by the window size (4), which the gradient check caught; a reshape and
/// two max reductions give the same forward values and the right backward.
fn max_pool2(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    x.reshape((b, c, h / 2, 2, w / 2, 2))?.max(5)?.max(3)
}

/// BLAKE3 of a flat parameter vector's little-endian f32 bytes: a checkpoint's content address.
pub fn digest(flat: &[f32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for v in flat {
        h.update(&v.to_le_bytes());
    }
    *h.finalize().as_bytes()
}

/// Writes a flat parameter vector as the model's safetensors file.
pub fn save_flat(arch: Arch, flat: &[f32], path: &Path) -> Result<(), Error> {
    let bytes = safetensors_bytes(arch, flat)?;
    std::fs::write(path, bytes).map_err(|source| Error::Io { file: path.to_path_buf(), source })
}

/// A flat parameter vector as the bytes of the model's safetensors file.
pub fn safetensors_bytes(arch: Arch, flat: &[f32]) -> Result<Vec<u8>, Error> {
    if flat.len() != arch.dim() {
        return Err(Error::Dim { model: arch.id(), expected: arch.dim(), got: flat.len() });
    }
    let bytes: Vec<u8> = flat.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut views = Vec::new();
    let mut at = 0;
    for (name, shape, _) in arch.tensors() {
        let n: usize = shape.iter().product();
        views.push((
            name,
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &bytes[4 * at..4 * (at + n)])?,
        ));
        at += n;
    }
    let mut meta = HashMap::new();
    meta.insert("vain.model".to_string(), arch.id().to_string());
    meta.insert("vain.version".to_string(), arch.version().to_string());
    meta.insert("vain.layout".to_string(), hex::encode(arch.layout_digest()));
    Ok(safetensors::serialize(views, Some(meta))?)
}

/// Reads a checkpoint of `arch` into a flat vector.
pub fn load_flat(arch: Arch, path: &Path) -> Result<Vec<f32>, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { file: path.to_path_buf(), source })?;
    let st = safetensors::SafeTensors::deserialize(&bytes)?;
    let want = arch.tensors();
    if st.len() != want.len() {
        return Err(Error::Checkpoint {
            file: path.to_path_buf(),
            why: format!("{} tensors, {} has {}", st.len(), arch, want.len()),
        });
    }
    let mut flat = Vec::with_capacity(arch.dim());
    for (name, shape, _) in want {
        let t = st
            .tensor(name)
            .map_err(|_| Error::Checkpoint { file: path.to_path_buf(), why: format!("no tensor {name}") })?;
        if t.shape() != shape.as_slice() || t.dtype() != safetensors::Dtype::F32 {
            return Err(Error::Checkpoint {
                file: path.to_path_buf(),
                why: format!("{name} is {:?} {:?}, {arch} has F32 {shape:?}", t.dtype(), t.shape()),
            });
        }
        flat.extend(t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
    }
    Ok(flat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::loss::cross_entropy;

    #[test]
    fn layouts_have_the_documented_sizes_sorted_names_and_distinct_digests() {
        assert_eq!(Arch::MnistMlp.dim(), 101_770);
        assert_eq!(Arch::MnistCnn.dim(), 80_202);
        for a in Arch::ALL {
            let names: Vec<&str> = a.tensors().iter().map(|t| t.0).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            assert_eq!(names, sorted, "{a}");
            assert_eq!(a.id().parse::<Arch>().expect("parse"), a);
        }
        assert_ne!(Arch::MnistMlp.layout_digest(), Arch::MnistCnn.layout_digest());
        assert_eq!(Arch::MnistCnn.range_of("fc2."), 80_202 - 1290..80_202);
        assert!("resnet".parse::<Arch>().is_err());
    }

    #[test]
    fn flat_safetensors_and_layout_round_trip() {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir().expect("tmp");
        for a in Arch::ALL {
            let m = Model::init(a, 3, &dev, DType::F32).expect("init");
            let flat = m.flat().expect("flat");
            assert!(flat.iter().any(|v| *v != 0.0));
            let p = dir.path().join(format!("{a}.safetensors"));
            m.save(&p).expect("save");
            let back = Model::load(a, &p, &dev, DType::F32).expect("load");
            assert_eq!(back.flat().expect("flat"), flat);
            assert_eq!(digest(&back.flat().expect("flat")), digest(&flat));
            // The file's tensors are the layout's, in the same flat order.
            let bytes = std::fs::read(&p).expect("read");
            let st = safetensors::SafeTensors::deserialize(&bytes).expect("st");
            let mut at = 0;
            for l in a.layout() {
                let t = st.tensor(&l.name).expect("tensor");
                let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
                assert_eq!(shape, l.shape);
                let n = t.data().len() / 4;
                let first = f32::from_le_bytes(t.data()[..4].try_into().expect("4"));
                assert_eq!(first, flat[at]);
                at += n;
            }
            assert_eq!(at, a.dim());
            let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("meta");
            assert_eq!(meta.metadata().as_ref().and_then(|m| m.get("vain.model")).map(String::as_str), Some(a.id()));
            let other = Arch::ALL.into_iter().find(|o| *o != a).expect("other");
            assert!(matches!(Model::load(other, &p, &dev, DType::F32), Err(Error::Checkpoint { .. })));
        }
    }

    /// Loss of a fixed tiny batch with coordinate `c` of the (f64) model moved by `h`.
    fn loss_moved(m: &Model, c: usize, h: f64, x: &Tensor, y: &Tensor) -> f64 {
        let mut at = 0;
        for v in m.vars() {
            let n = v.as_tensor().elem_count();
            if c < at + n {
                let orig = v.as_tensor().copy().expect("copy");
                let mut vals = orig.flatten_all().expect("flat").to_vec1::<f64>().expect("vec");
                vals[c - at] += h;
                v.set(&Tensor::from_vec(vals, orig.shape(), &Device::Cpu).expect("t")).expect("set");
                let l =
                    cross_entropy(&m.forward(x).expect("fwd"), y).expect("loss").to_scalar::<f64>().expect("scalar");
                v.set(&orig).expect("restore");
                return l;
            }
            at += n;
        }
        panic!("coordinate {c} outside the model")
    }

    #[test]
    fn gradients_match_finite_differences() {
        let dev = Device::Cpu;
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let u = Uniform::new(-1.0f64, 2.0).expect("uniform");
        let xs: Vec<f64> = (0..3 * 784).map(|_| u.sample(&mut rng)).collect();
        let x = Tensor::from_vec(xs, (3, 784), &dev).expect("x");
        let y = Tensor::from_vec(vec![3u32, 7, 1], 3, &dev).expect("y");
        for a in Arch::ALL {
            let m = Model::init(a, 5, &dev, DType::F64).expect("init");
            let loss = cross_entropy(&m.forward(&x).expect("fwd"), &y).expect("loss");
            let grads = loss.backward().expect("backward");
            let mut analytic = Vec::new();
            for v in m.vars() {
                let g = grads.get(v.as_tensor()).expect("grad");
                analytic.extend(g.flatten_all().expect("flat").to_vec1::<f64>().expect("vec"));
            }
            // One coordinate in each tensor plus a few at random, moved in f64 by a step small
            // enough not to cross a ReLU or max-pool kink.
            let mut coords: Vec<usize> = a
                .tensors()
                .iter()
                .scan(0, |at, (_, s, _)| {
                    let c = *at + s.iter().product::<usize>() / 2;
                    *at += s.iter().product::<usize>();
                    Some(c)
                })
                .collect();
            coords.extend((0..10).map(|_| (u.sample(&mut rng).abs() * 1e6) as usize % a.dim()));
            let mut checked = 0;
            for c in coords {
                let h = 1e-6;
                let fd = (loss_moved(&m, c, h, &x, &y) - loss_moved(&m, c, -h, &x, &y)) / (2.0 * h);
                let an = analytic[c];
                if an.abs() < 1e-7 && fd.abs() < 1e-7 {
                    continue;
                }
                assert!(
                    (fd - an).abs() <= 1e-4 * (fd.abs() + an.abs()) + 1e-8,
                    "{a} coordinate {c}: finite difference {fd}, backprop {an}"
                );
                checked += 1;
            }
            assert!(checked >= 6, "{a}: only {checked} coordinates had a gradient");
        }
    }
}
