//! LDAP bind authentication: bind as the service account, find the user's entry with the
//! configured filter, bind as that entry with the given password, then collect the DNs of the
//! user's groups. Every step runs under the configured timeout; a directory that hangs fails
//! the login, it never hangs the request.

use std::sync::Arc;

use berth_core::config::LdapConfig;
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, ldap_escape};

#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    /// Wrong password, or no such user: the caller is told only that the login failed.
    #[error("invalid credentials")]
    Invalid,
    /// The directory could not be asked (down, timed out, misconfigured).
    #[error("LDAP directory unavailable: {0}")]
    Unavailable(String),
}

/// A successful LDAP login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapLogin {
    pub dn: String,
    /// Lower-cased group DNs.
    pub groups: Vec<String>,
}

pub struct LdapAuth {
    config: LdapConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
}

fn unavailable(e: impl std::fmt::Display) -> LdapError {
    LdapError::Unavailable(e.to_string())
}

/// A DN in the form memberships are compared in.
pub fn normalize_dn(dn: &str) -> String {
    dn.split(',')
        .map(|rdn| rdn.trim().to_lowercase())
        .collect::<Vec<_>>()
        .join(",")
}

impl LdapAuth {
    /// `None` when LDAP is not configured.
    pub fn new(config: &LdapConfig) -> Result<Option<LdapAuth>, String> {
        if config.url.is_empty() {
            return Ok(None);
        }
        let tls = match &config.ca_file {
            None => None,
            Some(path) => {
                use rustls::pki_types::{CertificateDer, pem::PemObject};
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("auth.ldap.ca_file {}: {e}", path.display()))?
                {
                    let cert =
                        cert.map_err(|e| format!("auth.ldap.ca_file {}: {e}", path.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("auth.ldap.ca_file {}: {e}", path.display()))?;
                }
                Some(Arc::new(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(roots)
                        .with_no_client_auth(),
                ))
            }
        };
        Ok(Some(LdapAuth {
            config: config.clone(),
            tls,
        }))
    }

    pub async fn authenticate(
        &self,
        username: &str,
        password: &str,
    ) -> Result<LdapLogin, LdapError> {
        // An empty password is an "unauthenticated bind" that many servers accept: never let
        // it through as a login.
        if password.is_empty() || username.is_empty() {
            return Err(LdapError::Invalid);
        }
        let timeout = self.config.timeout.0;
        tokio::time::timeout(timeout * 4, self.run(username, password))
            .await
            .map_err(|_| LdapError::Unavailable("timed out".into()))?
    }

    async fn run(&self, username: &str, password: &str) -> Result<LdapLogin, LdapError> {
        let c = &self.config;
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(c.timeout.0)
            .set_starttls(c.starttls);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &c.url)
            .await
            .map_err(unavailable)?;
        ldap3::drive!(conn);
        ldap.with_timeout(c.timeout.0);
        if !c.bind_dn.is_empty() {
            ldap.simple_bind(&c.bind_dn, &c.bind_password)
                .await
                .and_then(|r| r.success())
                .map_err(|e| unavailable(format!("service bind: {e}")))?;
        }
        let filter = c.user_filter.replace("{username}", &ldap_escape(username));
        ldap.with_timeout(c.timeout.0);
        let (entries, _) = ldap
            .search(&c.user_base_dn, Scope::Subtree, &filter, vec!["1.1"])
            .await
            .and_then(|r| r.success())
            .map_err(|e| unavailable(format!("user search: {e}")))?;
        let [entry] = entries.as_slice() else {
            // None, or an ambiguous filter matching several entries: refuse either way.
            return Err(LdapError::Invalid);
        };
        let dn = SearchEntry::construct(entry.clone()).dn;
        ldap.with_timeout(c.timeout.0);
        let bind = ldap.simple_bind(&dn, password).await.map_err(unavailable)?;
        if bind.rc != 0 {
            return Err(LdapError::Invalid);
        }
        let mut groups = Vec::new();
        if !c.group_base_dn.is_empty() {
            if !c.bind_dn.is_empty() {
                ldap.with_timeout(c.timeout.0);
                ldap.simple_bind(&c.bind_dn, &c.bind_password)
                    .await
                    .and_then(|r| r.success())
                    .map_err(|e| unavailable(format!("service bind: {e}")))?;
            }
            let filter = c
                .group_filter
                .replace("{dn}", &ldap_escape(dn.as_str()))
                .replace("{username}", &ldap_escape(username));
            ldap.with_timeout(c.timeout.0);
            let (entries, _) = ldap
                .search(&c.group_base_dn, Scope::Subtree, &filter, vec!["1.1"])
                .await
                .and_then(|r| r.success())
                .map_err(|e| unavailable(format!("group search: {e}")))?;
            groups = entries
                .into_iter()
                .map(|e| normalize_dn(&SearchEntry::construct(e).dn))
                .collect();
            groups.sort();
            groups.dedup();
        }
        let _ = ldap.unbind().await;
        Ok(LdapLogin { dn, groups })
    }

    /// Whether a login's groups make it a registry admin.
    pub fn is_admin(&self, groups: &[String]) -> bool {
        !self.config.admin_group.is_empty()
            && groups.contains(&normalize_dn(&self.config.admin_group))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_normalize() {
        assert_eq!(
            normalize_dn("CN=Devs, OU=Groups,dc=Berth,dc=test"),
            "cn=devs,ou=groups,dc=berth,dc=test"
        );
    }
}
