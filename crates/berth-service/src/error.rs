//! What can go wrong, in the registry's own words. Every service returns [`Error`]; each
//! variant names one case and carries what a caller needs to act on it. Only the HTTP layer
//! (`berth-server/src/error.rs`) decides which status, OCI code and headers a client sees.

use std::time::Duration;

use berth_core::Digest;
use berth_meta::MetaError;
use berth_storage::StorageError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- what the request named ----
    #[error("{value:?} is not a repository name: {reason}")]
    NameInvalid { value: String, reason: String },
    #[error("repository {name} is not known to the registry")]
    NameUnknown { name: String },
    #[error("{value:?} is not a digest: {reason}")]
    DigestInvalid { value: String, reason: String },
    #[error("{value:?} is not a tag: {reason}")]
    TagInvalid { value: String, reason: String },
    #[error("the digest query parameter is required")]
    DigestRequired,
    #[error("at most {limit} tag parameters are accepted in one push")]
    TooManyTags { limit: usize },
    #[error("n={value:?} is not a non-negative integer")]
    PaginationInvalid { value: String },

    // ---- blobs and uploads ----
    #[error("blob {digest} is unknown to the registry")]
    BlobUnknown { digest: Digest },
    #[error("blob upload unknown to registry")]
    UploadUnknown,
    /// A chunk that does not continue the upload at its offset, or one racing another
    /// request on the same session.
    #[error("{reason}")]
    UploadOutOfOrder {
        repository: String,
        upload: String,
        offset: u64,
        reason: String,
    },
    #[error("the uploaded content has digest {actual}, not {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    /// Declared sizes that disagree with each other or with the body.
    #[error("{reason}")]
    SizeInvalid { reason: String },
    /// The request body failed or stalled; the session keeps its last offset.
    #[error("{reason}")]
    UploadBodyFailed { reason: String },
    /// A `Content-Range` that is not `<start>-<end>`.
    #[error("Content-Range {value:?} is not <start>-<end>")]
    ContentRangeInvalid { value: String },
    #[error("range not satisfiable for a blob of {size} bytes")]
    RangeUnsatisfiable { size: u64 },
    #[error("too many uploads are in progress (limits.upload_buffer_memory); retry shortly")]
    UploadMemoryExhausted,
    #[error("digest algorithm {0:?} is not supported")]
    AlgorithmUnsupported(String),

    // ---- manifests ----
    #[error("{reason}")]
    ManifestInvalid { reason: String },
    #[error("manifest is larger than the {limit}-byte limit")]
    ManifestTooLarge { limit: u64 },
    #[error("manifest {reference} is unknown to the registry")]
    ManifestUnknown { reference: String },
    #[error("blob {digest} is not in repository {repository}")]
    ManifestBlobUnknown { digest: Digest, repository: String },
    #[error("child manifest {digest} is not in repository {repository}")]
    ManifestChildUnknown { digest: Digest, repository: String },
    #[error(
        "conflict: {digest} is listed by the image index {} of this repository; delete the index first",
        indexes.join(", ")
    )]
    ListedBy {
        digest: Digest,
        indexes: Vec<String>,
    },
    #[error(
        "{reference} is an image index without a linux/amd64 image, and the request's Accept header does not include index types"
    )]
    NoPlatformImage { reference: String },

    // ---- what the registry's settings forbid ----
    #[error("deletes are disabled on this registry (registry.delete_enabled)")]
    DeletesDisabled,
    #[error("{project} is a pull-through cache project; it is read-only to clients")]
    ReadOnlyProxy { project: String },

    // ---- who may ----
    /// No credentials, and the operation needs some (`scope`: what a token must grant).
    #[error("authentication required")]
    AuthenticationRequired { scope: Option<String> },
    /// A token that does not grant the operation; `reason` says whether another token can.
    #[error("{reason}")]
    InsufficientScope { scope: String, reason: String },
    /// A signed-in caller without the right (`scope`: what was asked for, when a repository
    /// was).
    #[error("{reason}")]
    Denied {
        reason: String,
        scope: Option<String>,
    },
    /// Wrong, disabled, expired or deleted credentials.
    #[error("authentication failed")]
    LoginFailed,
    /// A token that does not verify or names an account that is gone.
    #[error("the token is invalid, expired, or its account no longer exists")]
    TokenInvalid,
    /// The identity provider (LDAP) could not be asked.
    #[error("the login could not be checked: the identity provider is unavailable")]
    LoginUnavailable,
    #[error("too many failed logins; try again in {} s", .retry_after.as_secs().max(1))]
    Throttled { retry_after: Duration },
    #[error("too many logins are being checked at once; try again in a moment")]
    LoginsBusy,

    // ---- the pull-through cache's upstream ----
    #[error("pull-through cache {project}: {message}")]
    UpstreamRateLimited {
        project: String,
        message: String,
        retry_after: Option<Duration>,
    },
    /// The upstream refused the proxy's credentials for a repository (or it does not exist
    /// there: registries answer both alike).
    #[error(
        "pull-through cache {project}: {message} (the repository may not exist upstream, or the proxy's credentials may not read it)"
    )]
    UpstreamUnauthorized { project: String, message: String },
    /// Unreachable, failing or sending something invalid.
    #[error("pull-through cache {project}: {message}")]
    UpstreamFailed { project: String, message: String },

    // ---- the admin API ----
    #[error("{reason}")]
    Invalid { reason: String },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{reason}")]
    Conflict { reason: String },
    /// An inventory went past one of the `[scan]` limits that stop it (time, paths).
    #[error("the inventory could not be read: {reason}")]
    ScanFailed { reason: String },

    // ---- the stores and everything else ----
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(reason: impl Into<String>) -> Error {
        Error::Invalid {
            reason: reason.into(),
        }
    }

    pub fn not_found(what: impl Into<String>) -> Error {
        Error::NotFound { what: what.into() }
    }

    pub fn conflict(reason: impl Into<String>) -> Error {
        Error::Conflict {
            reason: reason.into(),
        }
    }

    pub fn forbidden(reason: impl Into<String>) -> Error {
        Error::Denied {
            reason: reason.into(),
            scope: None,
        }
    }

    pub fn manifest_invalid(reason: impl Into<String>) -> Error {
        Error::ManifestInvalid {
            reason: reason.into(),
        }
    }
}

impl From<berth_auth::AuthError> for Error {
    fn from(e: berth_auth::AuthError) -> Self {
        match e {
            berth_auth::AuthError::Invalid => Error::LoginFailed,
            berth_auth::AuthError::Throttled(retry_after) => Error::Throttled { retry_after },
            berth_auth::AuthError::Busy => Error::LoginsBusy,
            berth_auth::AuthError::Unavailable(_) => Error::LoginUnavailable,
            berth_auth::AuthError::Meta(m) => Error::Meta(m),
            berth_auth::AuthError::Internal(m) => Error::Internal(m),
        }
    }
}

impl From<berth_auth::secret::SecretError> for Error {
    fn from(e: berth_auth::secret::SecretError) -> Self {
        match e {
            berth_auth::secret::SecretError::Busy => Error::LoginsBusy,
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<berth_jobs::JobError> for Error {
    fn from(e: berth_jobs::JobError) -> Self {
        match e {
            berth_jobs::JobError::Meta(m) => Error::Meta(m),
            other => Error::Internal(other.to_string()),
        }
    }
}
