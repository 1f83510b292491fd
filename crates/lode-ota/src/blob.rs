//! Firmware bytes: the [`BlobStore`] trait and its directory backend.
//!
//! Blobs are written under a temporary name, synced, then renamed into place, so a
//! reader never sees a partial file and a crash leaves at most a stray `*.tmp`.

use std::io::SeekFrom;
use std::path::PathBuf;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use lode_registry::BoxFuture;

/// A readable part of a stored blob.
pub type BlobReader = std::pin::Pin<Box<dyn AsyncRead + Send>>;

/// Where firmware bytes are kept, by key (the firmware id).
pub trait BlobStore: Send + Sync + 'static {
    /// Stores `bytes` under `key`, replacing a previous blob.
    fn put<'a>(&'a self, key: &'a str, bytes: Bytes) -> BoxFuture<'a, std::io::Result<()>>;
    /// The size of a blob, `None` when it does not exist.
    fn size<'a>(&'a self, key: &'a str) -> BoxFuture<'a, std::io::Result<Option<u64>>>;
    /// A reader of `len` bytes from `offset`, `None` when the blob does not exist.
    fn open_range<'a>(
        &'a self,
        key: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, std::io::Result<Option<BlobReader>>>;
    /// Removes a blob; a missing one is not an error.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, std::io::Result<()>>;
}

/// Blobs as files in one directory.
#[derive(Debug, Clone)]
pub struct DirBlobStore {
    dir: PathBuf,
}

impl DirBlobStore {
    /// Uses `dir`, creating it when missing.
    pub async fn open(dir: impl Into<PathBuf>) -> std::io::Result<DirBlobStore> {
        let dir = dir.into();
        tokio::fs::create_dir_all(&dir).await?;
        Ok(DirBlobStore { dir })
    }

    fn path(&self, key: &str) -> std::io::Result<PathBuf> {
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("invalid blob key {key:?}"),
            ));
        }
        Ok(self.dir.join(format!("{key}.bin")))
    }
}

fn not_found_is_none<T>(r: std::io::Result<T>) -> std::io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl BlobStore for DirBlobStore {
    fn put<'a>(&'a self, key: &'a str, bytes: Bytes) -> BoxFuture<'a, std::io::Result<()>> {
        Box::pin(async move {
            let path = self.path(key)?;
            let tmp = path.with_extension("tmp");
            let mut file = tokio::fs::File::create(&tmp).await?;
            file.write_all(&bytes).await?;
            file.sync_all().await?;
            drop(file);
            tokio::fs::rename(&tmp, &path).await
        })
    }

    fn size<'a>(&'a self, key: &'a str) -> BoxFuture<'a, std::io::Result<Option<u64>>> {
        Box::pin(async move {
            let path = self.path(key)?;
            Ok(not_found_is_none(tokio::fs::metadata(&path).await)?.map(|m| m.len()))
        })
    }

    fn open_range<'a>(
        &'a self,
        key: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, std::io::Result<Option<BlobReader>>> {
        Box::pin(async move {
            let path = self.path(key)?;
            let Some(mut file) = not_found_is_none(tokio::fs::File::open(&path).await)? else {
                return Ok(None);
            };
            file.seek(SeekFrom::Start(offset)).await?;
            let reader: BlobReader = Box::pin(file.take(len));
            Ok(Some(reader))
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, std::io::Result<()>> {
        Box::pin(async move {
            let path = self.path(key)?;
            not_found_is_none(tokio::fs::remove_file(&path).await).map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_read_range_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirBlobStore::open(dir.path().join("blobs")).await.unwrap();
        store
            .put("f1", Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
        assert_eq!(store.size("f1").await.unwrap(), Some(10));
        let mut r = store.open_range("f1", 3, 4).await.unwrap().unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"3456");
        store.delete("f1").await.unwrap();
        store.delete("f1").await.unwrap();
        assert_eq!(store.size("f1").await.unwrap(), None);
        assert!(store.open_range("f1", 0, 1).await.unwrap().is_none());
        assert!(store.put("../x", Bytes::new()).await.is_err());
    }
}
