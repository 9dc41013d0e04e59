//! Packages and documents on the facility's own disk: members read from
//! files, sealed output written atomically, packages opened into a new
//! folder (staged, verified, then renamed into place) and documents
//! rendered beside them. The CLI and the desk both call these; neither
//! does its own file handling of packages.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::document::{self, Format};
use crate::package::{self, Limits, MemberSource, OpenError, Opened};
use crate::pki::{CertError, CertInfo, TrustStore};
use crate::profile::{Profile, ProfileError};

/// What went wrong with a file. Each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file or folder could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The destination exists; nothing is overwritten.
    #[error("{} already exists; choose another name or move it away", .0.display())]
    Exists(PathBuf),
    /// The folder to open a package into exists; nothing is written into it.
    #[error("{} already exists; give a new folder name for the opened package", .0.display())]
    FolderExists(PathBuf),
    /// Not a regular file.
    #[error("{} is not a regular file", .0.display())]
    NotAFile(PathBuf),
    /// An attachment's file name cannot be used inside a package.
    #[error("attachment name {0:?} is not allowed ({1}); rename the file")]
    BadName(String, &'static str),
    /// A certificate file is not a usable certificate of this region.
    #[error("certificate {}: {source}", path.display())]
    Cert {
        /// The file.
        path: PathBuf,
        /// Why.
        source: CertError,
    },
    /// The profile is not usable.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The package did not open (see [`OpenError::is_verification_failure`]).
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The document could not be rendered.
    #[error("cannot render {}: {why}", path.display())]
    Render {
        /// The document file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

impl FileError {
    /// True when a package or certificate failed verification (as opposed
    /// to a local problem with files).
    pub fn is_verification_failure(&self) -> bool {
        match self {
            FileError::Open(e) => e.is_verification_failure(),
            FileError::Cert { .. } => true,
            _ => false,
        }
    }
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |source| FileError::Read {
        path: path.to_path_buf(),
        source,
    }
}

fn write_err(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |source| FileError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Read a whole (small) file.
pub fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    fs::read(path).map_err(read_err(path))
}

/// Verify each recipient certificate file against the trust store.
pub fn load_recipients(trust: &TrustStore, files: &[PathBuf]) -> Result<Vec<CertInfo>, FileError> {
    files
        .iter()
        .map(|f| {
            let cert = |source| FileError::Cert {
                path: f.clone(),
                source,
            };
            let info = CertInfo::parse_pem(&read(f)?, &f.display().to_string()).map_err(cert)?;
            let info = trust.verify_peer(&info.der, None).map_err(cert)?;
            info.facility_id().map_err(cert)?;
            Ok(info)
        })
        .collect()
}

/// Open a file as a member source (`in_package` is its path in the package).
pub fn member_from_file(
    path: &Path,
    in_package: String,
    media_type: String,
) -> Result<MemberSource<'static>, FileError> {
    let f = fs::File::open(path).map_err(read_err(path))?;
    let meta = f.metadata().map_err(read_err(path))?;
    if !meta.is_file() {
        return Err(FileError::NotAFile(path.to_path_buf()));
    }
    Ok(MemberSource {
        path: in_package,
        media_type,
        size: meta.len(),
        reader: Box::new(io::BufReader::new(f)),
    })
}

/// The media type of `document.json`.
pub const DOCUMENT_MEDIA_TYPE: &str = "application/fhir+json";

/// The document member (`document.json`) from a file.
pub fn document_from_file(path: &Path) -> Result<MemberSource<'static>, FileError> {
    member_from_file(
        path,
        package::DOCUMENT_PATH.into(),
        DOCUMENT_MEDIA_TYPE.into(),
    )
}

/// Read a document file (at most [`document::MAX_DOCUMENT_BYTES`] + 1
/// bytes, enough for validation to refuse a larger one).
pub fn read_document(path: &Path) -> Result<Vec<u8>, FileError> {
    let f = fs::File::open(path).map_err(read_err(path))?;
    if !f.metadata().map_err(read_err(path))?.is_file() {
        return Err(FileError::NotAFile(path.to_path_buf()));
    }
    let mut b = Vec::new();
    f.take(document::MAX_DOCUMENT_BYTES as u64 + 1)
        .read_to_end(&mut b)
        .map_err(read_err(path))?;
    Ok(b)
}

/// Where the copy of a sent document is kept: `PROFILE/sent/PACKAGE_ID/`.
pub fn sent_folder(p: &Profile, package_id: &str) -> PathBuf {
    p.path("sent").join(package_id)
}

/// Keep a copy of a document this facility sealed (folders 0700, the file
/// 0600), for reading and printing what was sent.
pub fn keep_sent_document(p: &Profile, package_id: &str, bytes: &[u8]) -> io::Result<()> {
    let dir = sent_folder(p, package_id);
    private_dir(&dir)?;
    let dest = dir.join(package::DOCUMENT_PATH);
    let mut f = private_file_options()
        .create(true)
        .truncate(true)
        .open(&dest)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The attachment members from files: each is `attachments/<file name>`.
pub fn attachments_from_files(files: &[PathBuf]) -> Result<Vec<MemberSource<'static>>, FileError> {
    files
        .iter()
        .map(|f| {
            let name = f
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| FileError::BadName(f.display().to_string(), "not UTF-8"))?;
            package::path::check_attachment_name(name)
                .map_err(|why| FileError::BadName(name.into(), why))?;
            member_from_file(
                f,
                format!("{}/{name}", package::ATTACHMENTS_DIR),
                package::media_type_for(name).into(),
            )
        })
        .collect()
}

/// A new file written through a temporary file in the same folder and
/// persisted only by [`NewFile::commit`]: dropped uncommitted, nothing is
/// left behind, and an existing file is never overwritten.
pub struct NewFile {
    tmp: tempfile::NamedTempFile,
    path: PathBuf,
    out: crate::writeback::Pieces,
}

impl NewFile {
    /// Start writing `path`, which must not exist.
    pub fn create(path: &Path) -> Result<NewFile, FileError> {
        if path.exists() {
            return Err(FileError::Exists(path.to_path_buf()));
        }
        let dir = parent_or_dot(path);
        let tmp = tempfile::Builder::new()
            .prefix(".renkei-new-")
            .tempfile_in(&dir)
            .map_err(write_err(&dir))?;
        Ok(NewFile {
            tmp,
            path: path.to_path_buf(),
            out: Default::default(),
        })
    }

    /// Flush to disk and give the file its name.
    pub fn commit(mut self) -> Result<(), FileError> {
        let path = self.path;
        self.out
            .flush(self.tmp.as_file())
            .map_err(write_err(&path))?;
        self.tmp.as_file().sync_all().map_err(write_err(&path))?;
        self.tmp
            .persist_noclobber(&path)
            .map_err(|e| write_err(&path)(e.error))?;
        Ok(())
    }
}

impl Write for NewFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A large package goes straight to disk as it is written, a MiB at
        // a time (writeback::Pieces): the fsync at commit then waits only
        // for its tail.
        self.out.write_all(self.tmp.as_file(), buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush(self.tmp.as_file())
    }
}

/// Create `dir` (and missing parents) private to this user (0700); an
/// existing `dir` is made 0700 too (its parents are left alone).
pub fn private_dir(dir: &Path) -> io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        b.mode(0o700);
        b.create(dir)?;
        if fs::metadata(dir)?.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
    }
    #[cfg(not(unix))]
    b.create(dir)?;
    Ok(())
}

/// Options that create a file private to this user (0600 on Unix).
pub fn private_file_options() -> fs::OpenOptions {
    let mut o = fs::OpenOptions::new();
    o.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}

/// Make an existing file private to this user (0600) if its group or
/// others have any access; a missing file is not an error.
pub fn make_private(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let m = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if m.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn parent_or_dot(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Open a package read from `input` into the new folder `out`: members are
/// staged in a hidden folder beside it, everything is verified, and only
/// then is the staging folder renamed to `out`. On any failure nothing is
/// left behind.
pub fn open_to_dir(p: &Profile, input: impl Read + Send, out: &Path) -> Result<Opened, FileError> {
    let trust = p.trust()?;
    let me = p.facility_id()?;
    let identity = p.age_identity()?;
    if out.exists() {
        return Err(FileError::FolderExists(out.to_path_buf()));
    }
    let parent = parent_or_dot(out);
    fs::create_dir_all(&parent).map_err(write_err(&parent))?;
    let staging = tempfile::Builder::new()
        .prefix(".renkei-open-")
        .tempdir_in(&parent)
        .map_err(write_err(&parent))?;
    let opened = package::open_into(
        input,
        &identity,
        &trust,
        &me,
        staging.path(),
        &Limits::default(),
        None,
    )?;
    let kept = staging.keep();
    fs::rename(&kept, out).map_err(|e| {
        let _ = fs::remove_dir_all(&kept);
        write_err(out)(e)
    })?;
    Ok(opened)
}

/// Write the Japanese rendering of an opened package's (validated)
/// document into its folder as `document.txt` or `document.html` (mode
/// 0600, like the members beside it); returns the file written. An
/// existing file is not overwritten.
pub fn render_opened(folder: &Path, format: Format) -> Result<PathBuf, FileError> {
    let src = folder.join(package::DOCUMENT_PATH);
    let mut bytes = Vec::new();
    fs::File::open(&src)
        .and_then(|f| {
            f.take(document::MAX_DOCUMENT_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(read_err(&src))?;
    let bundle = document::validate::parse(&bytes).map_err(|i| FileError::Render {
        path: src.clone(),
        why: i.message,
    })?;
    let name = match format {
        Format::Text => "document.txt",
        Format::Html => "document.html",
    };
    let dest = folder.join(name);
    let mut f = private_file_options()
        .create_new(true)
        .open(&dest)
        .map_err(write_err(&dest))?;
    f.write_all(document::render(&bundle, format).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(write_err(&dest))?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn private_dir_creates_and_tightens_0700() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let tmp = tempfile::tempdir().unwrap();
        let new = tmp.path().join("outbox");
        private_dir(&new).unwrap();
        assert_eq!(mode(&new), 0o700);
        let old = tmp.path().join("sent");
        fs::create_dir(&old).unwrap();
        fs::set_permissions(&old, fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&old).unwrap();
        assert_eq!(mode(&old), 0o700);
        let f = old.join("f");
        fs::write(&f, b"x").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        make_private(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        make_private(&old.join("missing")).unwrap();
    }
}
