//! MNIST in the IDX format, plain or gzip, with every size checked before allocation.
//!
//! IDX (LeCun's format): a big-endian header `00 00 TT DD` (type 0x08 = u8, DD dimensions),
//! DD big-endian u32 sizes, then the data in row-major order. Images are `0x00000803` (n, rows,
//! cols), labels `0x00000801` (n). [`Mnist::embedded`] is the 10,000 real digits committed with
//! the crate (data/mnist-10k/PROVENANCE.md); [`Mnist::load_dir`] reads the standard files.

use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Most items an IDX file may declare (the full MNIST has 60,000; this leaves room for EMNIST).
pub const MAX_ITEMS: u32 = 1 << 20;
/// Most bytes a decompressed IDX file may have (MAX_ITEMS 28×28 images plus the header).
pub const MAX_BYTES: u64 = MAX_ITEMS as u64 * 784 + 16;
const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;
/// Image side the models take.
pub const SIDE: usize = 28;
/// Pixels per image.
pub const PIXELS: usize = SIDE * SIDE;
/// Classes.
pub const CLASSES: usize = 10;

const EMBEDDED_IMAGES: &[u8] = include_bytes!("../data/mnist-10k/images-idx3-ubyte.gz");
const EMBEDDED_LABELS: &[u8] = include_bytes!("../data/mnist-10k/labels-idx1-ubyte.gz");

/// Why a data file was refused. Each names the file and, where it applies, the byte offset.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The gzip stream is corrupt.
    #[error("{file}: gzip stream corrupt: {source}")]
    Gzip {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The magic number is not the expected one.
    #[error("{file}: offset 0: magic {found:#010x}, expected {expected:#010x} ({what})")]
    Magic {
        /// The file.
        file: PathBuf,
        /// What was there.
        found: u32,
        /// What an IDX file of this kind starts with.
        expected: u32,
        /// Which kind.
        what: &'static str,
    },
    /// The file ends before what its header declares.
    #[error("{file}: truncated at offset {offset}: the header declares {expected} bytes")]
    Truncated {
        /// The file.
        file: PathBuf,
        /// Where the data ends.
        offset: u64,
        /// How long the file should be.
        expected: u64,
    },
    /// The file holds more bytes than its header declares.
    #[error("{file}: {extra} bytes after the declared end at offset {offset}")]
    TrailingBytes {
        /// The file.
        file: PathBuf,
        /// The declared end.
        offset: u64,
        /// Extra bytes.
        extra: u64,
    },
    /// A declared size is zero or over the limits.
    #[error("{file}: offset {offset}: {what} = {value} is outside 1..={max}")]
    Size {
        /// The file.
        file: PathBuf,
        /// Offset of the size field.
        offset: u64,
        /// Which size.
        what: &'static str,
        /// Declared value.
        value: u64,
        /// Largest accepted.
        max: u64,
    },
    /// A label is not a class.
    #[error("{file}: offset {offset}: label {label} is not in 0..{CLASSES}")]
    Label {
        /// The file.
        file: PathBuf,
        /// Offset of the label.
        offset: u64,
        /// The value.
        label: u8,
    },
    /// Images and labels disagree on the count.
    #[error("{images} has {n_images} images but {labels} has {n_labels} labels")]
    CountMismatch {
        /// Images file.
        images: PathBuf,
        /// Their count.
        n_images: usize,
        /// Labels file.
        labels: PathBuf,
        /// Their count.
        n_labels: usize,
    },
    /// A directory lacks an expected file.
    #[error("{dir}: no {name} (nor {name}.gz)")]
    Missing {
        /// The directory.
        dir: PathBuf,
        /// The file looked for.
        name: &'static str,
    },
}

/// Images (u8 pixels, row-major) and their labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// `len × PIXELS` bytes.
    pub images: Vec<u8>,
    /// One class per image.
    pub labels: Vec<u8>,
}

/// BLAKE3 commitment to the items `idx` of `data`: each item's index, label and pixels, in
/// order (what a client's training manifest binds its data to).
pub fn commitment(data: &Dataset, idx: &[usize]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"vain/data-commitment/v1");
    for &i in idx {
        h.update(&(i as u64).to_le_bytes());
        if i < data.len() {
            h.update(&[data.labels[i]]);
            h.update(data.image(i));
        }
    }
    *h.finalize().as_bytes()
}

impl Dataset {
    /// Items.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image `i`'s pixels.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * PIXELS..(i + 1) * PIXELS]
    }

    /// The items at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut images = Vec::with_capacity(indices.len() * PIXELS);
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        Dataset { images, labels: indices.iter().map(|&i| self.labels[i]).collect() }
    }
}

/// A training and a test set.
#[derive(Debug, Clone)]
pub struct Mnist {
    /// Training items.
    pub train: Dataset,
    /// Test items (`None` when the source has a single set, as the embedded one).
    pub test: Option<Dataset>,
}

fn read_all(bytes: &[u8], file: &Path) -> Result<Vec<u8>, Error> {
    read_limited(bytes, file, MAX_BYTES)
}

fn read_limited(bytes: &[u8], file: &Path, max: u64) -> Result<Vec<u8>, Error> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        // One byte over the limit tells "too big" from "exactly the limit".
        GzDecoder::new(bytes)
            .take(max + 1)
            .read_to_end(&mut out)
            .map_err(|source| Error::Gzip { file: file.to_path_buf(), source })?;
        if out.len() as u64 > max {
            return Err(Error::Size {
                file: file.to_path_buf(),
                offset: 0,
                what: "decompressed bytes",
                value: out.len() as u64,
                max,
            });
        }
        Ok(out)
    } else {
        Ok(bytes.to_vec())
    }
}

fn be32(b: &[u8], at: usize, file: &Path, expected: u64) -> Result<u32, Error> {
    match b.get(at..at + 4) {
        Some(w) => Ok(u32::from_be_bytes([w[0], w[1], w[2], w[3]])),
        None => Err(Error::Truncated { file: file.to_path_buf(), offset: b.len() as u64, expected }),
    }
}

fn check_magic(b: &[u8], file: &Path, expected: u32, what: &'static str) -> Result<(), Error> {
    let found = be32(b, 0, file, 4)?;
    if found != expected {
        return Err(Error::Magic { file: file.to_path_buf(), found, expected, what });
    }
    Ok(())
}

fn size(b: &[u8], at: usize, file: &Path, what: &'static str, max: u32, header: u64) -> Result<u32, Error> {
    let v = be32(b, at, file, header)?;
    if v == 0 || v > max {
        return Err(Error::Size {
            file: file.to_path_buf(),
            offset: at as u64,
            what,
            value: u64::from(v),
            max: u64::from(max),
        });
    }
    Ok(v)
}

fn check_len(b: &[u8], file: &Path, expected: u64) -> Result<(), Error> {
    let len = b.len() as u64;
    if len < expected {
        return Err(Error::Truncated { file: file.to_path_buf(), offset: len, expected });
    }
    if len > expected {
        return Err(Error::TrailingBytes { file: file.to_path_buf(), offset: expected, extra: len - expected });
    }
    Ok(())
}

/// Parses an IDX image file (plain or gzip) of 28×28 images; `file` names it in errors.
pub fn parse_images(bytes: &[u8], file: &Path) -> Result<Vec<u8>, Error> {
    let b = read_all(bytes, file)?;
    check_magic(&b, file, IMAGES_MAGIC, "images: u8, 3 dimensions")?;
    let n = size(&b, 4, file, "image count", MAX_ITEMS, 16)?;
    let rows = size(&b, 8, file, "rows", SIDE as u32, 16)?;
    let cols = size(&b, 12, file, "columns", SIDE as u32, 16)?;
    if rows as usize != SIDE || cols as usize != SIDE {
        return Err(Error::Size {
            file: file.to_path_buf(),
            offset: 8,
            what: "rows × columns (must be 28 × 28)",
            value: u64::from(rows) * u64::from(cols),
            max: PIXELS as u64,
        });
    }
    check_len(&b, file, 16 + u64::from(n) * PIXELS as u64)?;
    Ok(b[16..].to_vec())
}

/// Parses an IDX label file (plain or gzip); every label must be a class.
pub fn parse_labels(bytes: &[u8], file: &Path) -> Result<Vec<u8>, Error> {
    let b = read_all(bytes, file)?;
    check_magic(&b, file, LABELS_MAGIC, "labels: u8, 1 dimension")?;
    let n = size(&b, 4, file, "label count", MAX_ITEMS, 8)?;
    check_len(&b, file, 8 + u64::from(n))?;
    if let Some(i) = b[8..].iter().position(|&l| usize::from(l) >= CLASSES) {
        return Err(Error::Label { file: file.to_path_buf(), offset: 8 + i as u64, label: b[8 + i] });
    }
    Ok(b[8..].to_vec())
}

/// Parses a pair of files into a data set.
pub fn parse_pair(images: (&[u8], &Path), labels: (&[u8], &Path)) -> Result<Dataset, Error> {
    let im = parse_images(images.0, images.1)?;
    let lb = parse_labels(labels.0, labels.1)?;
    if im.len() / PIXELS != lb.len() {
        return Err(Error::CountMismatch {
            images: images.1.to_path_buf(),
            n_images: im.len() / PIXELS,
            labels: labels.1.to_path_buf(),
            n_labels: lb.len(),
        });
    }
    Ok(Dataset { images: im, labels: lb })
}

fn find(dir: &Path, name: &'static str) -> Result<Option<PathBuf>, Error> {
    for candidate in [dir.join(name), dir.join(format!("{name}.gz"))] {
        if candidate.exists() {
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

fn read_file(path: &Path) -> Result<Vec<u8>, Error> {
    let meta = std::fs::metadata(path).map_err(|source| Error::Io { file: path.to_path_buf(), source })?;
    if meta.len() > MAX_BYTES {
        return Err(Error::Size {
            file: path.to_path_buf(),
            offset: 0,
            what: "file bytes",
            value: meta.len(),
            max: MAX_BYTES,
        });
    }
    std::fs::read(path).map_err(|source| Error::Io { file: path.to_path_buf(), source })
}

fn load_pair(dir: &Path, images: &'static str, labels: &'static str) -> Result<Option<Dataset>, Error> {
    let (Some(i), l) = (find(dir, images)?, find(dir, labels)?) else { return Ok(None) };
    let l = l.ok_or(Error::Missing { dir: dir.to_path_buf(), name: labels })?;
    Ok(Some(parse_pair((&read_file(&i)?, &i), (&read_file(&l)?, &l))?))
}

impl Mnist {
    /// The 10,000 real digits embedded in the crate, as one set (`test` is `None`: the caller
    /// holds out its own test split).
    pub fn embedded() -> Mnist {
        let ds = parse_pair(
            (EMBEDDED_IMAGES, Path::new("embedded images-idx3-ubyte.gz")),
            (EMBEDDED_LABELS, Path::new("embedded labels-idx1-ubyte.gz")),
        )
        .expect("the embedded MNIST files are checked by the crate's tests");
        Mnist { train: ds, test: None }
    }

    /// The standard MNIST files in `dir` (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
    /// and optionally `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`; each plain or `.gz`).
    pub fn load_dir(dir: &Path) -> Result<Mnist, Error> {
        let train = load_pair(dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")?
            .ok_or(Error::Missing { dir: dir.to_path_buf(), name: "train-images-idx3-ubyte" })?;
        let test = load_pair(dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?;
        Ok(Mnist { train, test })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(n: u32, rows: u32, cols: u32, body: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [IMAGES_MAGIC, n, rows, cols] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v.extend((0..body).map(|i| (i % 251) as u8));
        v
    }

    fn labels(ls: &[u8]) -> Vec<u8> {
        let mut v = LABELS_MAGIC.to_be_bytes().to_vec();
        v.extend_from_slice(&(ls.len() as u32).to_be_bytes());
        v.extend_from_slice(ls);
        v
    }

    fn gz(b: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).expect("gzip");
        e.finish().expect("gzip")
    }

    #[test]
    fn the_embedded_digits_load_with_their_documented_counts() {
        let m = Mnist::embedded();
        assert_eq!(m.train.len(), 10_000);
        assert_eq!(m.train.images.len(), 10_000 * PIXELS);
        let mut per = [0usize; CLASSES];
        m.train.labels.iter().for_each(|&l| per[usize::from(l)] += 1);
        assert_eq!(per, [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]);
        // Real digits: mostly background, some ink, nothing constant.
        let ink = m.train.images.iter().filter(|&&p| p > 128).count() as f64 / m.train.images.len() as f64;
        assert!((0.08..0.25).contains(&ink), "ink fraction {ink}");
    }

    #[test]
    fn plain_and_gzip_parse_alike_and_a_directory_loads() {
        let im = images(3, 28, 28, 3 * PIXELS);
        let lb = labels(&[1, 2, 9]);
        let p = Path::new("x");
        assert_eq!(parse_images(&im, p).expect("plain"), parse_images(&gz(&im), p).expect("gz"));
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("train-images-idx3-ubyte.gz"), gz(&im)).expect("w");
        std::fs::write(dir.path().join("train-labels-idx1-ubyte"), &lb).expect("w");
        let m = Mnist::load_dir(dir.path()).expect("load");
        assert_eq!(m.train.labels, vec![1, 2, 9]);
        assert!(m.test.is_none());
        std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), &im).expect("w");
        let e = Mnist::load_dir(dir.path()).expect_err("labels missing");
        assert!(matches!(e, Error::Missing { name: "t10k-labels-idx1-ubyte", .. }), "{e}");
    }

    #[test]
    fn each_bad_file_gets_its_typed_error_naming_the_file_and_offset() {
        let p = Path::new("bad.idx");
        let mut wrong = images(1, 28, 28, PIXELS);
        wrong[3] = 0x01;
        let e = parse_images(&wrong, p).expect_err("magic");
        assert!(
            matches!(e, Error::Magic { found: 0x801, .. }) && e.to_string().starts_with("bad.idx: offset 0"),
            "{e}"
        );
        let e = parse_images(&images(2, 28, 28, PIXELS + 5), p).expect_err("short");
        assert!(
            matches!(e, Error::Truncated { offset, expected, .. } if offset == 16 + PIXELS as u64 + 5 && expected == 16 + 2 * PIXELS as u64),
            "{e}"
        );
        let e = parse_images(&images(1, 28, 28, PIXELS + 1), p).expect_err("long");
        assert!(matches!(e, Error::TrailingBytes { extra: 1, .. }), "{e}");
        let e = parse_images(&images(MAX_ITEMS + 1, 28, 28, 0), p).expect_err("count");
        assert!(matches!(e, Error::Size { offset: 4, what: "image count", .. }), "{e}");
        let e = parse_images(&images(1, 32, 32, 1024), p).expect_err("side");
        assert!(matches!(e, Error::Size { offset: 8, .. }), "{e}");
        let e = parse_images(&wrong[..6], p).expect_err("header cut");
        assert!(matches!(e, Error::Magic { .. } | Error::Truncated { .. }), "{e}");
        let e = parse_labels(&labels(&[3, 10, 4]), p).expect_err("label");
        assert!(matches!(e, Error::Label { offset: 9, label: 10, .. }), "{e}");
        let e = parse_labels(&gz(&labels(&[1]))[..20], p).expect_err("gzip cut");
        assert!(matches!(e, Error::Gzip { .. }), "{e}");
        let e = parse_pair((&images(2, 28, 28, 2 * PIXELS), p), (&labels(&[1]), Path::new("l"))).expect_err("count");
        assert!(matches!(e, Error::CountMismatch { n_images: 2, n_labels: 1, .. }), "{e}");
        let e = read_limited(&gz(&[0u8; 5000]), p, 4096).expect_err("bomb");
        assert!(matches!(e, Error::Size { what: "decompressed bytes", .. }), "{e}");
    }
}
