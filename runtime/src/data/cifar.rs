//! CIFAR-10, binary version, from a folder.
//!
//! Files: `data_batch_1.bin` .. `data_batch_5.bin` (train) and `test_batch.bin`
//! (validation). Each record is 1 label byte (0..=9) and 3072 pixel bytes: the red plane,
//! then green, then blue, each 32x32 row-major; so the pixel bytes are already NCHW.

use super::{DataError, Dataset, Split, PIXELS, VALUES};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Bytes per record: a label and 3x32x32 pixels.
const RECORD: usize = 1 + VALUES;

/// The usual per-channel mean and standard deviation of the CIFAR-10 training images,
/// pixel values in [0, 1].
pub const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
pub const CIFAR10_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];

pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// CIFAR-10 from the folder `dir`: train is every `data_batch_<n>.bin` there (ordered by
/// n; at least one), validation is `test_batch.bin`; at most `limit` records per split
/// (the first ones, in file order; only as much is read). Pixels / 255, then standardised
/// with [`CIFAR10_MEAN`] and [`CIFAR10_STD`]. CPU tensors.
pub fn load_cifar10(dir: &Path, limit: Option<usize>) -> Result<Dataset, DataError> {
    if !dir.exists() {
        return Err(DataError::MissingFolder { path: dir.to_path_buf() });
    }
    if !dir.is_dir() {
        return Err(DataError::NotAFolder { path: dir.to_path_buf() });
    }
    let train_files = train_files(dir)?;
    let test = dir.join("test_batch.bin");
    if !test.is_file() {
        return Err(DataError::MissingTestBatch { path: dir.to_path_buf() });
    }
    let train = read_split(&train_files, limit, dir, "train")?;
    let val = read_split(&[test], limit, dir, "validation")?;
    Ok(Dataset {
        source: format!("CIFAR-10 from {} ({} train / {} validation images)", dir.display(), train.len(), val.len()),
        train,
        val,
        num_classes: 10,
        class_names: CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
        mean: CIFAR10_MEAN,
        std: CIFAR10_STD,
    })
}

/// Records in the training files of `dir` (by their sizes; nothing is read), None where
/// they cannot be listed.
pub(super) fn train_records(dir: &Path) -> Option<usize> {
    let sizes = train_files(dir).ok()?.iter().map(|p| p.metadata().map(|m| m.len())).collect::<Result<Vec<_>, _>>();
    Some(sizes.ok()?.iter().map(|&size| (size / RECORD as u64) as usize).sum())
}

/// `data_batch_<n>.bin` files in `dir`, ordered by n.
fn train_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let io = |source| DataError::Io { path: dir.to_path_buf(), source };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let number = name
            .to_str()
            .and_then(|n| n.strip_prefix("data_batch_"))
            .and_then(|n| n.strip_suffix(".bin"))
            .and_then(|n| n.parse::<u32>().ok());
        if let Some(number) = number {
            if entry.path().is_file() {
                found.push((number, entry.path()));
            }
        }
    }
    if found.is_empty() {
        return Err(DataError::NoTrainBatches { path: dir.to_path_buf() });
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Reads up to `limit` records from `files` in order, checking sizes and labels.
fn read_split(files: &[PathBuf], limit: Option<usize>, dir: &Path, split: &'static str) -> Result<Split, DataError> {
    let limit = limit.unwrap_or(usize::MAX);
    // Byte -> standardised value, per channel.
    let lut: [[f32; 256]; 3] =
        std::array::from_fn(|c| std::array::from_fn(|b| (b as f32 / 255.0 - CIFAR10_MEAN[c]) / CIFAR10_STD[c]));
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    let mut bytes = Vec::new();
    for path in files {
        if labels.len() >= limit {
            break;
        }
        let io = |source| DataError::Io { path: path.clone(), source };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        if size % RECORD as u64 != 0 {
            return Err(DataError::BadFileSize { path: path.clone(), size });
        }
        let records = ((size / RECORD as u64) as usize).min(limit - labels.len());
        bytes.clear();
        bytes.reserve(records * RECORD);
        file.by_ref().take((records * RECORD) as u64).read_to_end(&mut bytes).map_err(io)?;
        if bytes.len() != records * RECORD {
            let e = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "file shrank while being read");
            return Err(io(e));
        }
        pixels.reserve(records * VALUES);
        labels.reserve(records);
        for (index, record) in bytes.chunks_exact(RECORD).enumerate() {
            let label = record[0];
            if label >= 10 {
                return Err(DataError::BadLabel { path: path.clone(), index, label });
            }
            labels.push(label as i64);
            for (c, plane) in record[1..].chunks_exact(PIXELS).enumerate() {
                pixels.extend(plane.iter().map(|&b| lut[c][b as usize]));
            }
        }
    }
    if labels.is_empty() {
        return Err(DataError::EmptySplit { path: dir.to_path_buf(), split });
    }
    Ok(Split::from_vecs(&pixels, &labels))
}

#[cfg(test)]
mod tests {
    use super::super::test_util::TempDir;
    use super::*;
    use tch::{Device, Kind};

    /// A record whose pixel (c, h, w) is `(37 * seed + 50 * c + 3 * h + w) % 256`.
    fn record(label: u8, seed: usize) -> Vec<u8> {
        let mut r = vec![label];
        for c in 0..3 {
            for h in 0..32 {
                for w in 0..32 {
                    r.push(((37 * seed + 50 * c + 3 * h + w) % 256) as u8);
                }
            }
        }
        r
    }

    /// Writes `file` with records for `labels`, record i built from seed `first_seed + i`.
    fn write_batch(dir: &Path, file: &str, labels: &[u8], first_seed: usize) {
        let bytes: Vec<u8> = labels.iter().enumerate().flat_map(|(i, &l)| record(l, first_seed + i)).collect();
        std::fs::write(dir.join(file), bytes).unwrap();
    }

    fn expected_pixel(seed: usize, c: usize, h: usize, w: usize) -> f32 {
        let b = ((37 * seed + 50 * c + 3 * h + w) % 256) as f32;
        (b / 255.0 - CIFAR10_MEAN[c]) / CIFAR10_STD[c]
    }

    #[test]
    fn loads_the_binary_format() {
        let dir = TempDir::new("cifar-ok");
        write_batch(dir.path(), "data_batch_1.bin", &[3, 9, 0], 0);
        write_batch(dir.path(), "data_batch_2.bin", &[7, 1], 3);
        write_batch(dir.path(), "test_batch.bin", &[5, 6], 100);
        std::fs::write(dir.path().join("batches.meta.txt"), "airplane\n").unwrap(); // ignored
        let d = load_cifar10(dir.path(), None).unwrap();
        assert_eq!(d.train.images().size(), vec![5, 3, 32, 32]);
        assert_eq!(d.train.images().kind(), Kind::Float);
        assert_eq!(d.train.labels().kind(), Kind::Int64);
        assert_eq!(d.train.images().device(), Device::Cpu);
        assert_eq!(Vec::<i64>::try_from(d.train.labels()).unwrap(), vec![3, 9, 0, 7, 1]);
        assert_eq!(Vec::<i64>::try_from(d.val.labels()).unwrap(), vec![5, 6]);
        assert_eq!((d.num_classes, d.class_names[3].as_str()), (10, "cat"));
        assert!(d.source.contains("5 train / 2 validation"), "{}", d.source);
        // Planes are R, G, B; rows then columns; records in file order.
        for (n, seed) in [(0usize, 0usize), (2, 2), (3, 3), (4, 4)] {
            for (c, h, w) in [(0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 5, 7), (2, 31, 30), (2, 17, 0)] {
                let got = d.train.images().double_value(&[n as i64, c as i64, h as i64, w as i64]) as f32;
                assert!((got - expected_pixel(seed, c, h, w)).abs() < 1e-6, "n{n} c{c} h{h} w{w}: {got}");
            }
        }
        let got = d.val.images().double_value(&[1, 2, 4, 9]) as f32;
        assert!((got - expected_pixel(101, 2, 4, 9)).abs() < 1e-6);
        // Byte 0 is -mean/std, byte 255 is (1-mean)/std.
        let raw = d.train.images().double_value(&[0, 0, 0, 0]) as f32; // seed 0, byte 0
        assert!((raw + CIFAR10_MEAN[0] / CIFAR10_STD[0]).abs() < 1e-6);
    }

    #[test]
    fn limit_and_batch_order() {
        let dir = TempDir::new("cifar-limit");
        // Numeric order: 2 before 10.
        write_batch(dir.path(), "data_batch_10.bin", &[8, 8], 50);
        write_batch(dir.path(), "data_batch_2.bin", &[1, 2, 3], 0);
        write_batch(dir.path(), "test_batch.bin", &[4, 5, 6, 7], 100);
        let d = load_cifar10(dir.path(), None).unwrap();
        assert_eq!(Vec::<i64>::try_from(d.train.labels()).unwrap(), vec![1, 2, 3, 8, 8]);
        let d = load_cifar10(dir.path(), Some(4)).unwrap();
        assert_eq!(Vec::<i64>::try_from(d.train.labels()).unwrap(), vec![1, 2, 3, 8]);
        assert_eq!(Vec::<i64>::try_from(d.val.labels()).unwrap(), vec![4, 5, 6, 7]);
        let d = load_cifar10(dir.path(), Some(2)).unwrap();
        assert_eq!((d.train.len(), d.val.len()), (2, 2));
        let got = d.val.images().double_value(&[1, 0, 0, 0]) as f32;
        assert!((got - expected_pixel(101, 0, 0, 0)).abs() < 1e-6);
    }

    #[test]
    fn errors_say_what_and_where() {
        let dir = TempDir::new("cifar-err");
        let missing = dir.path().join("nope");
        let e = load_cifar10(&missing, None).unwrap_err();
        assert!(matches!(e, DataError::MissingFolder { .. }));
        assert_eq!(e.to_string(), format!("CIFAR-10 folder {} does not exist", missing.display()));

        let file = dir.path().join("plain.txt");
        std::fs::write(&file, "x").unwrap();
        let e = load_cifar10(&file, None).unwrap_err();
        assert_eq!(e.to_string(), format!("CIFAR-10 path {} is not a folder", file.display()));

        let e = load_cifar10(dir.path(), None).unwrap_err();
        assert!(matches!(e, DataError::NoTrainBatches { .. }));
        assert!(e
            .to_string()
            .starts_with(&format!("CIFAR-10 folder {} has no training batches", dir.path().display())));

        write_batch(dir.path(), "data_batch_1.bin", &[1, 2], 0);
        let e = load_cifar10(dir.path(), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("CIFAR-10 folder {} has no test_batch.bin (the validation split)", dir.path().display())
        );

        write_batch(dir.path(), "test_batch.bin", &[1], 0);
        load_cifar10(dir.path(), None).unwrap();

        // A truncated file.
        let bad = dir.path().join("data_batch_3.bin");
        let mut bytes = record(1, 0);
        bytes.extend(&record(2, 1)[..100]);
        std::fs::write(&bad, bytes).unwrap();
        let e = load_cifar10(dir.path(), None).unwrap_err();
        assert!(matches!(e, DataError::BadFileSize { size: 3173, .. }));
        assert!(
            e.to_string().starts_with(&format!(
                "{}: size 3173 bytes is not a multiple of the 3073-byte CIFAR-10 record",
                bad.display()
            )),
            "{e}"
        );
        // Not read at all when the limit is met before it.
        load_cifar10(dir.path(), Some(2)).unwrap();

        // A label out of range, in record 2 of the file.
        write_batch(dir.path(), "data_batch_3.bin", &[0, 9, 10, 1], 0);
        let e = load_cifar10(dir.path(), None).unwrap_err();
        assert!(matches!(e, DataError::BadLabel { index: 2, label: 10, .. }));
        assert_eq!(e.to_string(), format!("{}: record 2 has label 10; CIFAR-10 labels are 0 to 9", bad.display()));
        std::fs::remove_file(&bad).unwrap();

        // An empty test batch.
        std::fs::write(dir.path().join("test_batch.bin"), b"").unwrap();
        let e = load_cifar10(dir.path(), None).unwrap_err();
        assert_eq!(e.to_string(), format!("the validation split of {} holds no records", dir.path().display()));
    }
}
