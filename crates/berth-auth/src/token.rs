//! Tokens of the Docker token protocol: HS256 JWTs signed with keys kept in the database, so
//! every node of a deployment verifies what any node issued. The newest key signs, every key
//! listed verifies (rotation without a flag day); an unknown `kid` reloads the keys at most
//! once per [`RELOAD_INTERVAL`], which is how a node learns a key another node added.
//!
//! HMAC and not RSA/ECDSA: the tokens are only ever verified by Berth itself (Distribution
//! needed public keys because its token server was another program), and an HMAC check costs
//! microseconds on the pull path.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use berth_meta::MetaStore;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::secret::random_bytes;

pub const ISSUER: &str = "berth";
/// Clock skew tolerated between the nodes and the clients that relay tokens.
pub const LEEWAY: Duration = Duration::from_secs(60);
const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// One entry of a token's `access` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The login name (`robot$…` for robots); empty for anonymous tokens.
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<Access>,
    /// The principal's key (`u:<id>`, `r:<id>`, or empty): a name reused by a new account never
    /// inherits an old account's tokens.
    #[serde(default)]
    pub pk: String,
    /// `refresh` for refresh tokens, which are accepted only by the token endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error(transparent)]
    Meta(#[from] berth_meta::MetaError),
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
}

struct Keys {
    /// (kid, secret), newest first.
    list: Vec<(String, Vec<u8>)>,
    loaded: Instant,
}

pub struct KeyRing {
    meta: MetaStore,
    keys: RwLock<Keys>,
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl KeyRing {
    /// Loads the signing keys, creating the first one if the database has none.
    pub async fn load(meta: MetaStore) -> Result<KeyRing, TokenError> {
        let mut list = meta.token_keys().await?;
        if list.is_empty() {
            let kid = hex::encode(random_bytes::<8>()?);
            // A concurrent first start on another node may insert its own key too; both are
            // valid and the newest signs.
            meta.add_token_key(&kid, &random_bytes::<32>()?).await?;
            list = meta.token_keys().await?;
        }
        Ok(KeyRing {
            meta,
            keys: RwLock::new(Keys {
                list,
                loaded: Instant::now(),
            }),
        })
    }

    /// Adds a new signing key; tokens signed by the older ones stay valid.
    pub async fn rotate(&self) -> Result<String, TokenError> {
        let kid = hex::encode(random_bytes::<8>()?);
        self.meta
            .add_token_key(&kid, &random_bytes::<32>()?)
            .await?;
        self.reload().await?;
        Ok(kid)
    }

    async fn reload(&self) -> Result<(), TokenError> {
        let list = self.meta.token_keys().await?;
        let mut k = self.keys.write().unwrap_or_else(|e| e.into_inner());
        k.list = list;
        k.loaded = Instant::now();
        Ok(())
    }

    fn key(&self, kid: Option<&str>) -> Option<(String, Vec<u8>)> {
        let k = self.keys.read().unwrap_or_else(|e| e.into_inner());
        match kid {
            None => k.list.first().cloned(),
            Some(kid) => k.list.iter().find(|(id, _)| id == kid).cloned(),
        }
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let (kid, secret) = self
            .key(None)
            .ok_or_else(|| TokenError::Invalid("no signing key".into()))?;
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid);
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(&secret))
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// Checks signature, issuer, audience, expiry and not-before (with [`LEEWAY`]).
    pub async fn verify(&self, token: &str, audience: &str) -> Result<Claims, TokenError> {
        let header = berth_core::credentials::token_header(token).map_err(TokenError::Invalid)?;
        if header.alg != "HS256" {
            return Err(TokenError::Invalid(format!("algorithm {:?}", header.alg)));
        }
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Invalid("no kid in the header".into()))?;
        let mut key = self.key(Some(&kid));
        if key.is_none() {
            let stale = self
                .keys
                .read()
                .map(|k| k.loaded.elapsed() >= RELOAD_INTERVAL)
                .unwrap_or(true);
            if stale {
                self.reload().await?;
                key = self.key(Some(&kid));
            }
        }
        let (_, secret) = key.ok_or_else(|| TokenError::Invalid(format!("unknown kid {kid}")))?;
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = LEEWAY.as_secs();
        v.validate_nbf = true;
        v.set_audience(&[audience]);
        v.set_issuer(&[ISSUER]);
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&secret), &v)
            .map(|d| d.claims)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ring() -> (tempfile::TempDir, KeyRing) {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaStore::open_for_tests(dir.path()).await.unwrap();
        (dir, KeyRing::load(meta).await.unwrap())
    }

    fn claims(aud: &str, exp_in: i64) -> Claims {
        let now = now_secs();
        Claims {
            iss: ISSUER.into(),
            sub: "alice".into(),
            aud: aud.into(),
            exp: (now as i64 + exp_in) as u64,
            nbf: now - 10,
            iat: now,
            jti: "j".into(),
            access: vec![Access {
                kind: "repository".into(),
                name: "team/app".into(),
                actions: vec!["pull".into()],
            }],
            pk: "u:1".into(),
            typ: None,
        }
    }

    #[tokio::test]
    async fn tokens_verify_and_refuse() {
        let (_d, ring) = ring().await;
        let t = ring.sign(&claims("berth", 300)).unwrap();
        assert_eq!(ring.verify(&t, "berth").await.unwrap().sub, "alice");
        assert!(ring.verify(&t, "other").await.is_err(), "wrong audience");
        let expired = ring.sign(&claims("berth", -120)).unwrap();
        assert!(ring.verify(&expired, "berth").await.is_err(), "expired");
        let mut bad = t.clone();
        let last = bad.pop().unwrap();
        bad.push(if last == 'A' { 'B' } else { 'A' });
        assert!(ring.verify(&bad, "berth").await.is_err(), "bad signature");
        // Rotation: the old key still verifies, the new one signs.
        let kid = ring.rotate().await.unwrap();
        assert!(ring.verify(&t, "berth").await.is_ok());
        let t2 = ring.sign(&claims("berth", 300)).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&t2).unwrap().kid.as_deref(),
            Some(kid.as_str())
        );
    }
}
