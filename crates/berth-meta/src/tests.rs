use super::*;
use berth_core::RepoName;

/// The PostgreSQL of the tests, if there is one: `TEST_POSTGRES_URL` (scripts/test.sh starts
/// one and sets it). Without it the PostgreSQL half of each test is skipped, with a note;
/// under `CI=true` its absence fails the test.
pub(crate) fn test_postgres_url() -> Option<String> {
    match std::env::var("TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true needs TEST_POSTGRES_URL (scripts/pg-test-server.sh prints one)"
            );
            eprintln!("skipped on PostgreSQL: TEST_POSTGRES_URL is not set");
            None
        }
    }
}

/// A MetaStore test, run on both dialects in the same `cargo test`: `<name>::sqlite` on a
/// fresh SQLite file, `<name>::postgres` on a fresh schema of the test PostgreSQL.
macro_rules! on_both_dialects {
    ($(#[$attr:meta])* async fn $name:ident($m:ident) $body:block) => {
        $(#[$attr])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($m: MetaStore) $body

            #[tokio::test]
            async fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                run(MetaStore::open_sqlite(&dir.path().join("berth.db")).await.unwrap()).await;
            }

            #[tokio::test]
            async fn postgres() {
                let Some(url) = test_postgres_url() else {
                    return;
                };
                let opts = MetaStore::test_postgres_options(&url).await.unwrap();
                run(MetaStore::open_postgres(&opts).await.unwrap()).await;
            }
        }
    };
}

fn repo(s: &str) -> RepoName {
    RepoName::parse(s).unwrap()
}

fn d(s: &str) -> Digest {
    Digest::sha256_of(s.as_bytes())
}

const GEN: &str = "2b0c3d6e-1a1f-4c55-9a43-3b3c2d1e0f00";

async fn push_blob(m: &MetaStore, repo_id: i64, content: &str) -> Digest {
    let id = uuid_like(content);
    m.create_upload(&id, repo_id, b"state").await.unwrap();
    m.commit_blob(&id, repo_id, &d(content), Some((GEN, content.len() as u64)))
        .await
        .unwrap();
    d(content)
}

fn uuid_like(s: &str) -> String {
    format!("upload-{s}")
}

fn image(config: &Digest, size: u64) -> NewManifest {
    NewManifest {
        digest: d(&format!("manifest-of-{config}")),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        artifact_type: Some("application/vnd.oci.image.config.v1+json".into()),
        payload: b"{}".to_vec(),
        subject: None,
        config_digest: Some(config.clone()),
        annotations: None,
        blobs: vec![(config.clone(), size)],
        children: vec![],
        pushed_by: None,
        from_upstream: false,
        sparse: false,
    }
}

on_both_dialects! {
    async fn repos_are_created_once_and_listed_in_order(m) {
        let b = m.ensure_repo(&repo("team/b")).await.unwrap();
        let a = m.ensure_repo(&repo("team/a")).await.unwrap();
        assert_eq!(m.ensure_repo(&repo("team/b")).await.unwrap(), b);
        assert_ne!(a, b);
        m.ensure_repo(&repo("other")).await.unwrap();
        assert_eq!(
            m.list_repos(None, 10).await.unwrap(),
            ["other", "team/a", "team/b"]
        );
        assert_eq!(m.list_repos(Some("other"), 1).await.unwrap(), ["team/a"]);
    }
}

on_both_dialects! {
    async fn a_commit_of_a_known_digest_is_deduplicated_and_linked(m) {
        let r1 = m.ensure_repo(&repo("a")).await.unwrap();
        let r2 = m.ensure_repo(&repo("b")).await.unwrap();
        m.create_upload("u1", r1, b"s").await.unwrap();
        assert_eq!(
            m.commit_blob("u1", r1, &d("x"), Some((GEN, 1)))
                .await
                .unwrap(),
            CommitOutcome::Stored
        );
        m.create_upload("u2", r2, b"s").await.unwrap();
        let other_gen = "9b0c3d6e-1a1f-4c55-9a43-3b3c2d1e0f00";
        assert_eq!(
            m.commit_blob("u2", r2, &d("x"), Some((other_gen, 1)))
                .await
                .unwrap(),
            CommitOutcome::AlreadyLive {
                generation: GEN.into()
            }
        );
        assert!(
            m.get_upload("u2").await.unwrap().is_none(),
            "the upload row is consumed"
        );
        m.create_upload("u3", r2, b"s").await.unwrap();
        assert_eq!(
            m.commit_blob("u3", r2, &d("unknown"), None).await.unwrap(),
            CommitOutcome::NotLive
        );
        assert!(
            m.get_upload("u3").await.unwrap().is_some(),
            "nothing changes when not live"
        );
        assert_eq!(
            m.blob_in_repo(r2, &d("x"))
                .await
                .unwrap()
                .unwrap()
                .generation,
            GEN
        );
        assert!(m.unlink_blob(r1, &d("x")).await.unwrap());
        assert!(
            m.blob_in_repo(r1, &d("x")).await.unwrap().is_none(),
            "unlinked from a only"
        );
        assert!(m.blob_in_repo(r2, &d("x")).await.unwrap().is_some());
    }
}

on_both_dialects! {
    async fn upload_offsets_move_only_from_the_expected_offset(m) {
        let r = m.ensure_repo(&repo("a")).await.unwrap();
        m.create_upload("u", r, b"s0").await.unwrap();
        assert!(m.advance_upload("u", 0, 10, b"s1").await.unwrap());
        assert!(
            !m.advance_upload("u", 0, 20, b"s2").await.unwrap(),
            "a stale writer loses"
        );
        let row = m.get_upload("u").await.unwrap().unwrap();
        assert_eq!((row.offset, row.hash_state.as_slice()), (10, &b"s1"[..]));
    }
}

on_both_dialects! {
    async fn manifests_require_their_blobs_with_the_right_size(m) {
        let r = m.ensure_repo(&repo("a")).await.unwrap();
        let other = m.ensure_repo(&repo("b")).await.unwrap();
        let cfg = push_blob(&m, other, "cfg").await;
        let err = m
            .put_manifest(r, &image(&cfg, 3), &["v1"])
            .await
            .unwrap_err();
        assert!(
            matches!(err, PutManifestError::MissingBlob(ref x) if *x == cfg),
            "{err}"
        );
        m.link_blob(r, &cfg).await.unwrap();
        let err = m
            .put_manifest(r, &image(&cfg, 4), &["v1"])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                PutManifestError::SizeMismatch {
                    claimed: 4,
                    actual: 3,
                    ..
                }
            ),
            "{err}"
        );
        m.put_manifest(r, &image(&cfg, 3), &["v1"]).await.unwrap();
        let md = image(&cfg, 3).digest;
        assert_eq!(m.resolve_tag(r, "v1").await.unwrap(), Some(md.clone()));
        assert!(m.get_manifest(r, &md).await.unwrap().is_some());
        assert!(
            m.get_manifest(other, &md).await.unwrap().is_none(),
            "manifests are per repository"
        );
    }
}

on_both_dialects! {
    async fn tags_list_in_bytewise_order_and_delete(m) {
        let r = m.ensure_repo(&repo("a")).await.unwrap();
        let cfg = push_blob(&m, r, "cfg").await;
        for t in ["b", "A", "a", "_z", "B1"] {
            m.put_manifest(r, &image(&cfg, 3), &[t]).await.unwrap();
        }
        assert_eq!(
            m.list_tags(r, None, 100).await.unwrap(),
            ["A", "B1", "_z", "a", "b"]
        );
        assert_eq!(m.list_tags(r, Some("B1"), 2).await.unwrap(), ["_z", "a"]);
        assert!(m.delete_tag(r, "a", "alice").await.unwrap());
        assert!(!m.delete_tag(r, "a", "alice").await.unwrap());
        let md = image(&cfg, 3).digest;
        assert!(
            m.get_manifest(r, &md).await.unwrap().is_some(),
            "deleting a tag keeps the manifest"
        );
        assert_eq!(
            m.delete_manifest(r, &md, "alice").await.unwrap(),
            DeleteOutcome::Deleted(1)
        );
        assert!(
            m.list_tags(r, None, 100).await.unwrap().is_empty(),
            "deleting a manifest drops its tags"
        );
    }
}

on_both_dialects! {
    async fn index_children_must_exist_and_referrers_are_found(m) {
        let r = m.ensure_repo(&repo("a")).await.unwrap();
        let cfg = push_blob(&m, r, "cfg").await;
        let img = image(&cfg, 3);
        let index = NewManifest {
            digest: d("index"),
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            artifact_type: None,
            payload: b"{\"manifests\":[]}".to_vec(),
            subject: None,
            config_digest: None,
            annotations: None,
            blobs: vec![],
            children: vec![(img.digest.clone(), 2)],
            pushed_by: None,
            from_upstream: false,
            sparse: false,
        };
        let err = m.put_manifest(r, &index, &["multi"]).await.unwrap_err();
        assert!(matches!(err, PutManifestError::MissingManifest(_)), "{err}");
        m.put_manifest(r, &img, &[]).await.unwrap();
        m.put_manifest(r, &index, &["multi"]).await.unwrap();

        let mut sig = image(&cfg, 3);
        sig.digest = d("sig");
        sig.subject = Some(index.digest.clone());
        sig.artifact_type = Some("application/x-sig".into());
        m.put_manifest(r, &sig, &[]).await.unwrap();
        let mut sbom = sig.clone();
        sbom.digest = d("sbom");
        sbom.artifact_type = Some("application/x-sbom".into());
        m.put_manifest(r, &sbom, &[]).await.unwrap();

        let all = m.referrers(r, &index.digest, None, None, 10).await.unwrap();
        assert_eq!(all.len(), 2);
        let sigs = m
            .referrers(r, &index.digest, Some("application/x-sig"), None, 10)
            .await
            .unwrap();
        assert_eq!(
            sigs.iter().map(|x| &x.digest).collect::<Vec<_>>(),
            [&sig.digest]
        );
        assert!(
            m.referrers(r, &d("nothing"), None, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn the_read_cache_follows_own_writes_at_once_and_other_processes_soon() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let a = MetaStore::open_sqlite(&path).await.unwrap();
    // A second store on the same file stands in for another process (`berth gc`).
    let b = MetaStore::open_sqlite(&path).await.unwrap();
    let r = a.ensure_repo(&repo("x")).await.unwrap();
    let cfg = push_blob(&a, r, "cfg").await;
    let first = image(&cfg, 3);
    a.put_manifest(r, &first, &["t"]).await.unwrap();
    assert_eq!(
        a.resolve_tag(r, "t").await.unwrap(),
        Some(first.digest.clone())
    );
    assert!(a.get_manifest(r, &first.digest).await.unwrap().is_some());

    // Own write: visible at once.
    let mut second = image(&cfg, 3);
    second.digest = d("second");
    a.put_manifest(r, &second, &["t"]).await.unwrap();
    assert_eq!(
        a.resolve_tag(r, "t").await.unwrap(),
        Some(second.digest.clone())
    );

    // Another process deletes the manifest: the cache is flushed within a few polls.
    assert_eq!(
        b.delete_manifest(r, &second.digest, "alice").await.unwrap(),
        DeleteOutcome::Deleted(1)
    );
    let deadline = std::time::Instant::now() + cache::POLL * 8;
    loop {
        let tag = a.resolve_tag(r, "t").await.unwrap();
        let row = a.get_manifest(r, &second.digest).await.unwrap();
        if tag.is_none() && row.is_none() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stale cache after another process's delete"
        );
        tokio::time::sleep(cache::POLL / 2).await;
    }
}

on_both_dialects! {
    async fn roles_come_from_users_and_groups_and_the_best_wins(m) {
        use berth_core::access::Role;
        let p = m
            .create_project("team", false, Some("owner"))
            .await
            .unwrap();
        assert!(matches!(
            m.create_project("team", true, None).await,
            Err(CreateError::Exists)
        ));
        let v0 = m.auth_version();
        m.set_member(p.id, "user", "alice", Role::Guest)
            .await
            .unwrap();
        assert!(m.auth_version() > v0, "writes bump the auth version");
        m.set_member(p.id, "group", "cn=devs,dc=x", Role::Developer)
            .await
            .unwrap();
        assert_eq!(
            m.best_role(p.id, "owner", &[]).await.unwrap(),
            Some(Role::Admin)
        );
        assert_eq!(
            m.best_role(p.id, "alice", &[]).await.unwrap(),
            Some(Role::Guest)
        );
        assert_eq!(
            m.best_role(p.id, "alice", &["cn=devs,dc=x".into()])
                .await
                .unwrap(),
            Some(Role::Developer)
        );
        assert_eq!(
            m.best_role(p.id, "bob", &["cn=other".into()])
                .await
                .unwrap(),
            None
        );
        // Changing a role replaces it; removing a member removes its rights.
        assert!(
            !m.set_member(p.id, "user", "alice", Role::Maintainer)
                .await
                .unwrap()
        );
        assert_eq!(
            m.best_role(p.id, "alice", &[]).await.unwrap(),
            Some(Role::Maintainer)
        );
        assert!(m.remove_member(p.id, "user", "alice").await.unwrap());
        assert_eq!(m.best_role(p.id, "alice", &[]).await.unwrap(), None);
        // A project with a repository that holds something cannot be deleted; one whose
        // repositories are empty can, and they go with it.
        let r = m.ensure_repo(&repo("team/app")).await.unwrap();
        m.create_upload("u-team", r, b"s").await.unwrap();
        assert_eq!(
            m.delete_project("team").await.unwrap(),
            ProjectDeletion::HoldsRepositories(vec!["team/app".into()])
        );
        assert!(m.delete_upload("u-team").await.unwrap());
        assert_eq!(
            m.delete_project("team").await.unwrap(),
            ProjectDeletion::Deleted {
                empty_repositories: 1
            }
        );
        assert_eq!(m.repo_id(&repo("team/app")).await.unwrap(), None);
        m.create_project("empty", false, None).await.unwrap();
        assert_eq!(
            m.delete_project("empty").await.unwrap(),
            ProjectDeletion::Deleted {
                empty_repositories: 0
            }
        );
        assert_eq!(
            m.delete_project("empty").await.unwrap(),
            ProjectDeletion::NotFound
        );
    }
}

on_both_dialects! {
    async fn ldap_logins_never_take_over_local_users(m) {
        m.create_user("alice", Some("$argon2id$x"), "local", false)
            .await
            .unwrap();
        assert!(m.upsert_ldap_user("alice", &[]).await.unwrap().is_none());
        let u = m
            .upsert_ldap_user("bob", &["cn=a".into()])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (u.source.as_str(), u.ldap_groups.clone()),
            ("ldap", vec!["cn=a".to_owned()])
        );
        let v = m.auth_version();
        m.upsert_ldap_user("bob", &["cn=a".into()]).await.unwrap();
        assert_eq!(m.auth_version(), v, "an unchanged login writes nothing");
        let u = m.upsert_ldap_user("bob", &[]).await.unwrap().unwrap();
        assert!(u.ldap_groups.is_empty());
        assert!(
            !m.set_password("bob", "x").await.unwrap(),
            "LDAP users have no local password"
        );
    }
}

on_both_dialects! {
    async fn audit_queries_filter_page_and_prune(m) {
        let ev = |at: i64, actor: &str, action: &str, resource: &str| AuditEvent {
            count: 1,
            id: 0,
            at,
            actor: actor.into(),
            actor_kind: "user".into(),
            action: action.into(),
            resource: resource.into(),
            source: "10.0.0.1".into(),
            result: "success".into(),
            detail: String::new(),
        };
        let events: Vec<_> = (0..10)
            .map(|i| {
                ev(
                    1000 + i,
                    if i % 2 == 0 { "alice" } else { "bob" },
                    if i < 5 { "push" } else { "pull" },
                    &format!("team/app{}:v{i}", i % 3),
                )
            })
            .collect();
        m.insert_audit(&events).await.unwrap();
        let all = AuditFilter {
            limit: 100,
            ..Default::default()
        };
        let got = m.query_audit(&all).await.unwrap();
        assert_eq!(got.len(), 10);
        assert!(got.windows(2).all(|w| w[0].id > w[1].id), "newest first");
        let f = AuditFilter {
            actor: Some("alice".into()),
            action: Some("push".into()),
            ..all.clone()
        };
        assert_eq!(m.query_audit(&f).await.unwrap().len(), 3);
        let f = AuditFilter {
            resource: Some("team/app1".into()),
            ..all.clone()
        };
        assert!(
            m.query_audit(&f)
                .await
                .unwrap()
                .iter()
                .all(|e| e.resource.starts_with("team/app1"))
        );
        // Paging backwards with `before` visits every event once.
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = m
                .query_audit(&AuditFilter {
                    limit: 3,
                    before,
                    ..Default::default()
                })
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            before = page.last().map(|e| e.id);
            seen.extend(page.into_iter().map(|e| e.id));
        }
        assert_eq!(seen.len(), 10);
        let f = AuditFilter {
            since: Some(1005),
            until: Some(1007),
            ..all.clone()
        };
        assert_eq!(m.query_audit(&f).await.unwrap().len(), 2);
        assert_eq!(m.prune_audit(1004, 1000).await.unwrap(), 4);
        assert_eq!(m.query_audit(&all).await.unwrap().len(), 6);
    }
}

on_both_dialects! {
    async fn cached_tags_expire_by_project_and_age(m) {
        let cache = m.ensure_repo(&repo("hub/library/nginx")).await.unwrap();
        let local = m.ensure_repo(&repo("team/app")).await.unwrap();
        // Manifests from an upstream may reference blobs that are not here yet.
        let mut cached = image(&d("not-here-yet"), 3);
        cached.from_upstream = true;
        m.put_manifest(cache, &cached, &["1.27"]).await.unwrap();
        let cfg = push_blob(&m, local, "cfg").await;
        m.put_manifest(local, &image(&cfg, 3), &["v1"])
            .await
            .unwrap();
        assert_eq!(
            m.expire_project_tags("hub", 0, 100).await.unwrap(),
            0,
            "none is that old"
        );
        let later = now_ms() + 1;
        assert_eq!(m.expire_project_tags("hub", later, 100).await.unwrap(), 1);
        assert!(m.list_tags(cache, None, 10).await.unwrap().is_empty());
        assert_eq!(
            m.list_tags(local, None, 10).await.unwrap(),
            ["v1"],
            "other projects are untouched"
        );
    }
}

/// Two stores on one PostgreSQL schema stand in for two nodes: a tag moved on one is seen on
/// the other at once (tags are never cached there), a manifest deleted on one leaves the
/// other's cache through NOTIFY, and identity writes on one bump the other's auth version.
/// Needs TEST_POSTGRES_URL; under CI=true its absence fails the test.
#[tokio::test]
async fn two_nodes_on_postgres_see_each_others_writes() {
    let Some(url) = test_postgres_url() else {
        return;
    };
    let opts = MetaStore::test_postgres_options(&url).await.unwrap();
    let a = MetaStore::open_postgres(&opts).await.unwrap();
    let b = MetaStore::open_postgres(&opts).await.unwrap();
    assert_eq!(a.dialect(), Dialect::Postgres);
    let r = a.ensure_repo(&repo("x")).await.unwrap();
    assert_eq!(b.ensure_repo(&repo("x")).await.unwrap(), r);
    let cfg = push_blob(&a, r, "cfg").await;
    let first = image(&cfg, 3);
    a.put_manifest(r, &first, &["t"]).await.unwrap();
    // Warm b's caches.
    assert_eq!(
        b.resolve_tag(r, "t").await.unwrap(),
        Some(first.digest.clone())
    );
    assert!(b.get_manifest(r, &first.digest).await.unwrap().is_some());

    let mut second = image(&cfg, 3);
    second.digest = d("second");
    a.put_manifest(r, &second, &["t"]).await.unwrap();
    assert_eq!(
        b.resolve_tag(r, "t").await.unwrap(),
        Some(second.digest.clone()),
        "a tag moved on another node is seen at once"
    );

    // b serves first from its cache; a deletes it: b's copy goes when the NOTIFY arrives.
    assert!(b.get_manifest(r, &first.digest).await.unwrap().is_some());
    assert_eq!(
        a.delete_manifest(r, &first.digest, "alice").await.unwrap(),
        DeleteOutcome::Deleted(1)
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while b.get_manifest(r, &first.digest).await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "another node's delete never reached this node's cache"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let v = b.auth_version();
    a.create_project("team", false, None).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while b.auth_version() == v {
        assert!(
            std::time::Instant::now() < deadline,
            "another node's identity write never reached this node"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

on_both_dialects! {
    /// Many lookups at once (on PostgreSQL they share rounds of one query): each gets its own
    /// tag's digest, and a tag that does not exist is none.
    async fn concurrent_tag_lookups_each_get_their_own_answer(m) {
        let r = m.ensure_repo(&repo("x")).await.unwrap();
        let other = m.ensure_repo(&repo("y")).await.unwrap();
        let cfg = push_blob(&m, r, "cfg").await;
        let mut pushed = Vec::new();
        for i in 0..20 {
            let mut man = image(&cfg, 3);
            man.digest = d(&format!("manifest {i}"));
            m.put_manifest(r, &man, &[&format!("t{i}")]).await.unwrap();
            pushed.push(man.digest);
        }
        let m = std::sync::Arc::new(m);
        let mut asks = tokio::task::JoinSet::new();
        for k in 0..400usize {
            let m = m.clone();
            asks.spawn(async move {
                let i = k % 25;
                let tag = format!("t{i}");
                // Same tag names in another repository hold nothing.
                let repo = if k % 7 == 0 { other } else { r };
                (repo, i, m.resolve_tag(repo, &tag).await.unwrap())
            });
        }
        while let Some(asked) = asks.join_next().await {
            let (repo, i, got) = asked.unwrap();
            let want = (repo == r && i < 20).then(|| pushed[i].clone());
            assert_eq!(got, want, "tag t{i} of repository {repo}");
        }
    }
}

/// Lookups of one tag hammered on node b while node a moves it: every lookup that began after
/// the move committed answers the new manifest (a lookup never joins a round already running).
#[tokio::test]
async fn a_tag_lookup_begun_after_a_move_on_another_node_sees_it() {
    let Some(url) = test_postgres_url() else {
        return;
    };
    let opts = MetaStore::test_postgres_options(&url).await.unwrap();
    let a = MetaStore::open_postgres(&opts).await.unwrap();
    let b = std::sync::Arc::new(MetaStore::open_postgres(&opts).await.unwrap());
    let r = a.ensure_repo(&repo("x")).await.unwrap();
    let cfg = push_blob(&a, r, "cfg").await;
    let mut old = image(&cfg, 3);
    old.digest = d("move 0");
    a.put_manifest(r, &old, &["t"]).await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (b, stop) = (b.clone(), stop.clone());
        readers.spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let began = std::time::Instant::now();
                let got = b.resolve_tag(r, "t").await.unwrap().unwrap();
                seen.push((began, got));
            }
            seen
        });
    }
    let mut moves = Vec::new();
    for k in 1..=30 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let mut new = image(&cfg, 3);
        new.digest = d(&format!("move {k}"));
        a.put_manifest(r, &new, &["t"]).await.unwrap();
        moves.push((std::time::Instant::now(), new.digest));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut checked = 0;
    while let Some(seen) = readers.join_next().await {
        for (began, got) in seen.unwrap() {
            // The newest move committed before this lookup began.
            let Some(at) = moves.iter().rposition(|(done, _)| *done <= began) else {
                continue;
            };
            let allowed: Vec<&Digest> = moves[at..].iter().map(|(_, d)| d).collect();
            assert!(
                allowed.contains(&&got),
                "a lookup begun after move {} answered {got}",
                at + 1
            );
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} lookups began after a move");
}

/// A node refuses a schema whose `min_reader` is past the newest migration it knows, and
/// starts on one a newer node extended with migrations it does not know.
#[tokio::test]
async fn a_node_refuses_only_a_schema_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let m = MetaStore::open_sqlite(&path).await.unwrap();
    let known = schema::known_version(Dialect::Sqlite);
    // A newer node's additive migration, unknown to this build.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time)
         VALUES ($1, 'from a newer release', '2026-01-01', 1, x'00', 0)",
    )
    .bind(known + 1)
    .execute(&m.write)
    .await
    .unwrap();
    sqlx::query("CREATE TABLE added_later (x INTEGER)")
        .execute(&m.write)
        .await
        .unwrap();
    m.close().await;
    let m = MetaStore::open_sqlite(&path)
        .await
        .expect("an additive newer schema is readable");
    // A contraction by a newer release: this build can no longer work with the schema.
    sqlx::query("UPDATE schema_info SET value = $1 WHERE key = 'min_reader'")
        .bind(known + 1)
        .execute(&m.write)
        .await
        .unwrap();
    m.close().await;
    match MetaStore::open_sqlite(&path).await {
        Err(MetaError::Incompatible(msg)) => assert!(msg.contains("upgrade"), "{msg}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a node started on a schema it cannot read"),
    }
}

/// One dialect's migrated schema, in words both can be compared in: tables with their
/// columns (type, nullability, default), primary keys, unique and foreign-key constraints,
/// the number of check constraints, and the indexes created on their own.
#[derive(Debug, Default, PartialEq, Eq)]
struct SchemaShape {
    /// `table.column: type null|not null [default <literal>]`
    columns: std::collections::BTreeSet<String>,
    /// `table: PRIMARY KEY (a, b)`, `table: UNIQUE (a)`, `table: FOREIGN KEY (a) REFERENCES t(b) ...`
    constraints: std::collections::BTreeSet<String>,
    /// `table: n check constraints`
    checks: std::collections::BTreeSet<String>,
    /// `name on table (a, b) [unique] [partial]`
    indexes: std::collections::BTreeSet<String>,
}

/// A column type as both dialects spell it.
fn type_class(t: &str) -> &'static str {
    match t.to_ascii_lowercase().as_str() {
        "integer" | "bigint" => "integer",
        "text" => "text",
        "blob" | "bytea" => "bytes",
        _ => "unknown",
    }
}

/// A default value without PostgreSQL's casts and parentheses.
fn default_literal(d: &str) -> String {
    let mut d = d.trim().to_owned();
    for cast in ["::text", "::bigint", "::integer"] {
        d = d.replace(cast, "");
    }
    d.trim_matches(|c| c == '(' || c == ')').to_owned()
}

async fn sqlite_shape(m: &MetaStore) -> SchemaShape {
    use sqlx::Row;
    let mut s = SchemaShape::default();
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table'
           AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations' ORDER BY name",
    )
    .fetch_all(&m.read)
    .await
    .unwrap();
    for (t, sql) in &tables {
        let cols = sqlx::query(
            "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info($1) ORDER BY cid",
        )
        .bind(t)
        .fetch_all(&m.read)
        .await
        .unwrap();
        let mut pk: Vec<(i64, String)> = Vec::new();
        for c in &cols {
            let name: String = c.get(0);
            let pk_pos: i64 = c.get(4);
            // A primary-key column is never null (SQLite's rowid alias and PostgreSQL's
            // identity both say so, whatever the declaration).
            let not_null = c.get::<i64, _>(2) != 0 || pk_pos > 0;
            let default = c
                .get::<Option<String>, _>(3)
                .map(|d| format!(" default {}", default_literal(&d)))
                .unwrap_or_default();
            s.columns.insert(format!(
                "{t}.{name}: {} {}{default}",
                type_class(c.get::<&str, _>(1)),
                if not_null { "not null" } else { "null" }
            ));
            if pk_pos > 0 {
                pk.push((pk_pos, name));
            }
        }
        pk.sort();
        if !pk.is_empty() {
            let names: Vec<&str> = pk.iter().map(|(_, n)| n.as_str()).collect();
            s.constraints
                .insert(format!("{t}: PRIMARY KEY ({})", names.join(", ")));
        }
        let fks = sqlx::query(
            "SELECT \"table\", \"from\", \"to\", on_delete FROM pragma_foreign_key_list($1) ORDER BY id, seq",
        )
        .bind(t)
        .fetch_all(&m.read)
        .await
        .unwrap();
        for f in &fks {
            let on_delete: String = f.get(3);
            let action = match on_delete.as_str() {
                "NO ACTION" => String::new(),
                other => format!(" ON DELETE {other}"),
            };
            s.constraints.insert(format!(
                "{t}: FOREIGN KEY ({}) REFERENCES {}({}){action}",
                f.get::<String, _>(1),
                f.get::<String, _>(0),
                f.get::<String, _>(2)
            ));
        }
        let checks = sql.to_ascii_uppercase().matches("CHECK (").count();
        if checks > 0 {
            s.checks.insert(format!("{t}: {checks} check constraints"));
        }
        let indexes =
            sqlx::query("SELECT name, \"unique\", partial, origin FROM pragma_index_list($1)")
                .bind(t)
                .fetch_all(&m.read)
                .await
                .unwrap();
        for i in &indexes {
            let name: String = i.get(0);
            let origin: String = i.get(3);
            let cols: Vec<String> =
                sqlx::query_scalar("SELECT name FROM pragma_index_info($1) ORDER BY seqno")
                    .bind(&name)
                    .fetch_all(&m.read)
                    .await
                    .unwrap();
            match origin.as_str() {
                "u" => {
                    s.constraints
                        .insert(format!("{t}: UNIQUE ({})", cols.join(", ")));
                }
                "c" => {
                    s.indexes.insert(format!(
                        "{name} on {t} ({}){}{}",
                        cols.join(", "),
                        if i.get::<i64, _>(1) != 0 {
                            " unique"
                        } else {
                            ""
                        },
                        if i.get::<i64, _>(2) != 0 {
                            " partial"
                        } else {
                            ""
                        },
                    ));
                }
                _ => {}
            }
        }
    }
    s
}

async fn postgres_shape(m: &MetaStore) -> SchemaShape {
    use sqlx::Row;
    let mut s = SchemaShape::default();
    let cols = sqlx::query(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text,
                column_default::text, COALESCE(collation_name::text, '')
         FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(&m.read)
    .await
    .unwrap();
    for c in &cols {
        let (t, name, ty): (String, String, String) = (c.get(0), c.get(1), c.get(2));
        let default = c
            .get::<Option<String>, _>(4)
            .map(|d| format!(" default {}", default_literal(&d)))
            .unwrap_or_default();
        s.columns.insert(format!(
            "{t}.{name}: {} {}{default}",
            type_class(&ty),
            if c.get::<&str, _>(3) == "NO" {
                "not null"
            } else {
                "null"
            }
        ));
        // Text compares bytewise on both dialects (SQLite's BINARY is the default there).
        if ty == "text" {
            assert_eq!(
                c.get::<&str, _>(5),
                "C",
                "{t}.{name} is text without COLLATE \"C\": it would not sort like SQLite"
            );
        }
    }
    let constraints = sqlx::query(
        "SELECT conrelid::regclass::text, contype::text, pg_get_constraintdef(oid)
         FROM pg_constraint WHERE connamespace = current_schema()::regnamespace
           AND conrelid::regclass::text <> '_sqlx_migrations'",
    )
    .fetch_all(&m.read)
    .await
    .unwrap();
    let mut checks: std::collections::BTreeMap<String, usize> = Default::default();
    for c in &constraints {
        let t: String = c.get(0);
        let def: String = c.get(2);
        match c.get::<&str, _>(1) {
            "c" => *checks.entry(t).or_default() += 1,
            _ => {
                // "FOREIGN KEY (a) REFERENCES t(b) ON DELETE CASCADE", "PRIMARY KEY (a, b)".
                s.constraints.insert(format!("{t}: {def}"));
            }
        }
    }
    for (t, n) in checks {
        s.checks.insert(format!("{t}: {n} check constraints"));
    }
    let indexes = sqlx::query(
        "SELECT i.relname::text, t.relname::text, ix.indisunique, ix.indpred IS NOT NULL,
                (SELECT string_agg(pg_get_indexdef(ix.indexrelid, k, true), ', ' ORDER BY k)
                 FROM generate_series(1, ix.indnatts) k)
         FROM pg_index ix
         JOIN pg_class i ON i.oid = ix.indexrelid
         JOIN pg_class t ON t.oid = ix.indrelid
         WHERE t.relnamespace = current_schema()::regnamespace AND t.relname <> '_sqlx_migrations'
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = ix.indexrelid)",
    )
    .fetch_all(&m.read)
    .await
    .unwrap();
    for i in &indexes {
        s.indexes.insert(format!(
            "{} on {} ({}){}{}",
            i.get::<String, _>(0),
            i.get::<String, _>(1),
            i.get::<String, _>(4),
            if i.get::<bool, _>(2) { " unique" } else { "" },
            if i.get::<bool, _>(3) { " partial" } else { "" },
        ));
    }
    s
}

/// The two migration lists describe the same schema: every table, column (type class,
/// nullability, default), key, constraint and index of one is in the other.
#[tokio::test]
async fn both_dialects_migrate_to_the_same_schema() {
    let Some(url) = test_postgres_url() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lite = MetaStore::open_sqlite(&dir.path().join("berth.db"))
        .await
        .unwrap();
    let opts = MetaStore::test_postgres_options(&url).await.unwrap();
    let pg = MetaStore::open_postgres(&opts).await.unwrap();
    let (a, b) = (sqlite_shape(&lite).await, postgres_shape(&pg).await);
    assert!(a.columns.len() > 50, "the SQLite schema looks empty: {a:?}");
    let diff = |what: &str,
                x: &std::collections::BTreeSet<String>,
                y: &std::collections::BTreeSet<String>| {
        let only_sqlite: Vec<&String> = x.difference(y).collect();
        let only_pg: Vec<&String> = y.difference(x).collect();
        if only_sqlite.is_empty() && only_pg.is_empty() {
            String::new()
        } else {
            format!(
                "{what}:\n  only in SQLite: {only_sqlite:#?}\n  only in PostgreSQL: {only_pg:#?}\n"
            )
        }
    };
    let report = diff("columns", &a.columns, &b.columns)
        + &diff("constraints", &a.constraints, &b.constraints)
        + &diff("check constraints", &a.checks, &b.checks)
        + &diff("indexes", &a.indexes, &b.indexes);
    assert!(report.is_empty(), "the dialects' schemas differ:\n{report}");
}

/// The events after `after` once there are at least `n`. On PostgreSQL an event is read only
/// once every older transaction on the server has ended, and other tests run transactions
/// beside this one, so the last events may take a moment to show.
async fn settled_events(m: &MetaStore, after: EventPosition, n: usize) -> Vec<Event> {
    for _ in 0..200 {
        let events = m.events_after(after, 1000).await.unwrap();
        if events.len() >= n {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    m.events_after(after, 1000).await.unwrap()
}

/// (kind, repository, digest, tag, actor) of each event after `after`, once there are `n`.
async fn event_list(
    m: &MetaStore,
    after: EventPosition,
    n: usize,
) -> Vec<(String, String, Option<String>, Option<String>, String)> {
    settled_events(m, after, n)
        .await
        .into_iter()
        .map(|e| (e.kind, e.repository, e.digest, e.tag, e.actor))
        .collect()
}

on_both_dialects! {
    async fn every_change_writes_its_event_in_order(m) {
        let r = m.ensure_repo(&repo("team/app")).await.unwrap();
        let cfg = push_blob(&m, r, "cfg").await;
        let cfg2 = push_blob(&m, r, "cfg2").await;
        let mut first = image(&cfg, 3);
        first.pushed_by = Some("alice".into());
        let mut second = image(&cfg2, 4);
        second.pushed_by = Some("bob".into());
        let (a, b) = (first.digest.to_string(), second.digest.to_string());
        m.put_manifest(r, &first, &["v1", "latest"]).await.unwrap();
        // The same push again changes nothing and announces nothing.
        m.put_manifest(r, &first, &["v1"]).await.unwrap();
        m.put_manifest(r, &second, &["latest"]).await.unwrap();
        assert!(m.delete_tag(r, "v1", "carol").await.unwrap());
        assert_eq!(m.delete_manifest(r, &second.digest, "dave").await.unwrap(), DeleteOutcome::Deleted(1));
        m.delete_repository(&repo("team/app"), "erin").await.unwrap().unwrap();
        let s = |x: &str| x.to_owned();
        let app = || s("team/app");
        assert_eq!(
            event_list(&m, EventPosition::default(), 8).await,
            [
                (s("artifact.pushed"), app(), Some(a.clone()), None, s("alice")),
                (s("tag.set"), app(), Some(a.clone()), Some(s("latest")), s("alice")),
                (s("tag.set"), app(), Some(a.clone()), Some(s("v1")), s("alice")),
                (s("artifact.pushed"), app(), Some(b.clone()), None, s("bob")),
                (s("tag.set"), app(), Some(b.clone()), Some(s("latest")), s("bob")),
                (s("tag.deleted"), app(), Some(a.clone()), Some(s("v1")), s("carol")),
                (s("artifact.deleted"), app(), Some(b.clone()), None, s("dave")),
                (s("repository.deleted"), app(), None, None, s("erin")),
            ]
        );
        let all = settled_events(&m, EventPosition::default(), 8).await;
        let detail = |i: usize| serde_json::from_str::<serde_json::Value>(&all[i].detail).unwrap();
        assert_eq!(detail(0)["tags"], serde_json::json!(["latest", "v1"]));
        assert_eq!(detail(0)["size"], 2);
        assert_eq!(detail(4)["previous"], serde_json::json!(a));
        assert_eq!(detail(1)["previous"], serde_json::Value::Null);
        assert_eq!(detail(6)["tags"], serde_json::json!(["latest"]), "a deletion names the tags it took");
        // Reading on from a position gives the rest, in the same order.
        assert_eq!(event_list(&m, all[5].position(), 2).await.len(), 2);
        assert!(all.windows(2).all(|w| w[0].position() < w[1].position()));
    }
}

on_both_dialects! {
    async fn garbage_collection_announces_what_it_deletes(m) {
        let r = m.ensure_repo(&repo("ci")).await.unwrap();
        let cfg = push_blob(&m, r, "cfg").await;
        let img = image(&cfg, 3);
        m.put_manifest(r, &img, &[]).await.unwrap();
        let policy = GcPolicy { grace_ms: 0, untagged_age_ms: Some(0), lease_ms: 60_000 };
        let mut tx = m.gc_tx().await.unwrap();
        let review = tx.review_manifest(r, &img.digest.to_string(), &policy, now_ms() + 1).await.unwrap();
        assert_eq!(review, ManifestReview::Deleted(1));
        tx.commit().await.unwrap();
        // Pushed, then deleted.
        let events = event_list(&m, EventPosition::default(), 2).await;
        assert_eq!(
            events.last().unwrap(),
            &("artifact.deleted".to_owned(), "ci".to_owned(), Some(img.digest.to_string()), None, "gc".to_owned())
        );
    }
}

on_both_dialects! {
    async fn a_consumer_is_held_by_one_owner_and_moves_on_from_where_it_was(m) {
        let r = m.ensure_repo(&repo("app")).await.unwrap();
        let cfg = push_blob(&m, r, "cfg").await;
        m.put_manifest(r, &image(&cfg, 3), &["old"]).await.unwrap();
        // A new consumer starts at the end: it is handed what happens from now on.
        let start = m.claim_event_consumer("hook", "node-a", 60_000).await.unwrap().unwrap();
        assert!(m.events_after(start, 100).await.unwrap().is_empty());
        assert_eq!(m.claim_event_consumer("hook", "node-b", 60_000).await.unwrap(), None, "held by node-a");
        assert!(m.delete_tag(r, "old", "alice").await.unwrap());
        let new = settled_events(&m, start, 1).await;
        assert_eq!(new.len(), 1);
        assert!(!m.advance_event_consumer("hook", "node-b", new[0].position()).await.unwrap(), "not its lease");
        assert!(m.advance_event_consumer("hook", "node-a", new[0].position()).await.unwrap());
        // Released (a node stopping), the next owner goes on from there.
        m.release_event_consumer("hook", "node-a").await.unwrap();
        let at = m.claim_event_consumer("hook", "node-b", 60_000).await.unwrap().unwrap();
        assert_eq!(at, new[0].position());
        // A lease that ran out is taken over.
        let at2 = m.claim_event_consumer("other", "node-a", -1).await.unwrap().unwrap();
        assert_eq!(m.claim_event_consumer("other", "node-b", 60_000).await.unwrap(), Some(at2));
        // Purging deletes what every consumer has passed (both are at the third event), and
        // keeps what one has not.
        assert_eq!(m.purge_events(now_ms() + 1, 100).await.unwrap(), 3);
        m.put_manifest(r, &image(&cfg, 3), &["new"]).await.unwrap();
        let newer = settled_events(&m, new[0].position(), 1).await;
        let last = newer.last().unwrap().position();
        assert!(m.advance_event_consumer("hook", "node-b", last).await.unwrap());
        assert_eq!(m.purge_events(now_ms() + 1, 100).await.unwrap(), 0, "\"other\" has not passed them");
        assert!(m.advance_event_consumer("other", "node-b", last).await.unwrap());
        assert_eq!(m.purge_events(now_ms() + 1, 100).await.unwrap(), newer.len() as u64);
        assert!(m.events_after(EventPosition::default(), 100).await.unwrap().is_empty());
        // Nor is anything purged before it is old enough.
        m.put_manifest(r, &image(&cfg, 3), &["newest"]).await.unwrap();
        let last = settled_events(&m, last, 1).await.last().unwrap().position();
        assert!(m.advance_event_consumer("hook", "node-b", last).await.unwrap());
        assert!(m.advance_event_consumer("other", "node-b", last).await.unwrap());
        assert_eq!(m.purge_events(now_ms() - 60_000, 100).await.unwrap(), 0);
    }
}

/// PostgreSQL only (SQLite writers take turns): an event whose transaction took its id first
/// but commits last is read after the others, never skipped.
#[tokio::test]
async fn an_event_committed_late_is_not_skipped() {
    let Some(url) = test_postgres_url() else {
        return;
    };
    let opts = MetaStore::test_postgres_options(&url).await.unwrap();
    let m = MetaStore::open_postgres(&opts).await.unwrap();
    let r = m.ensure_repo(&repo("app")).await.unwrap();
    let cfg = push_blob(&m, r, "cfg").await;
    let mut slow = m.begin_write().await.unwrap();
    let event = events::NewEvent {
        kind: EventKind::TagDeleted,
        repo_id: r,
        digest: None,
        tag: Some("slow"),
        actor: "slow",
        detail: serde_json::json!({}),
    };
    events::record(&mut slow, event, now_ms()).await.unwrap();
    m.put_manifest(r, &image(&cfg, 3), &[]).await.unwrap();
    assert!(
        m.events_after(EventPosition::default(), 100)
            .await
            .unwrap()
            .is_empty(),
        "nothing is handed on while an older transaction may still add an event before it"
    );
    slow.commit().await.unwrap();
    let events = settled_events(&m, EventPosition::default(), 2).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["tag.deleted", "artifact.pushed"]);
    assert!(events[0].id < events[1].id);
}

/// PostgreSQL only: a blob review that overlaps the delete of the blob's last manifest must
/// not drop the review the delete queued. Before the review locked its queue row first, it
/// saw the reference (the delete not yet committed), waited on the row the delete had just
/// re-queued, and then deleted it: the blob was never reviewed again and its bytes stayed
/// forever (seen in the three-node GC stress test).
#[tokio::test]
async fn a_review_racing_the_delete_of_the_last_reference_keeps_the_blob_queued() {
    let Some(url) = test_postgres_url() else {
        return;
    };
    let opts = MetaStore::test_postgres_options(&url).await.unwrap();
    let m = MetaStore::open_postgres(&opts).await.unwrap();
    let r = m.ensure_repo(&repo("app")).await.unwrap();
    let cfg = push_blob(&m, r, "cfg").await;
    let img = image(&cfg, 3);
    m.put_manifest(r, &img, &["v1"]).await.unwrap();
    let policy = GcPolicy {
        grace_ms: 0,
        untagged_age_ms: None,
        lease_ms: 60_000,
    };
    // The delete of the only manifest, held open after it re-queued the blob.
    let mut delete = m.begin_write().await.unwrap();
    let n = manifests::delete_manifest_cascade(
        &mut delete,
        r,
        &img.digest.to_string(),
        now_ms(),
        "alice",
    )
    .await
    .unwrap();
    assert_eq!(n, 1);
    let review = {
        let m = m.clone();
        let digest = cfg.to_string();
        tokio::spawn(async move {
            let mut tx = m.gc_tx().await.unwrap();
            let outcome = tx
                .review_blob(&digest, &policy, now_ms() + 1)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            outcome
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    delete.commit().await.unwrap();
    let outcome = review.await.unwrap();
    let queued = m
        .blob_review_queued_for_tests(&cfg.to_string())
        .await
        .unwrap();
    assert!(
        matches!(outcome, BlobReview::Sweep(_)) || queued,
        "the blob was neither swept nor left queued: {outcome:?}"
    );
}

/// PostgreSQL only: a dump restored onto another server carries transaction ids above the new
/// server's. Renumbered at open, the stream keeps its order, a consumer keeps its place, and
/// what is written after the restore comes after.
#[tokio::test]
async fn events_keep_their_order_and_consumers_their_place_after_a_restore() {
    let Some(url) = test_postgres_url() else {
        return;
    };
    let opts = MetaStore::test_postgres_options(&url).await.unwrap();
    let m = MetaStore::open_postgres(&opts).await.unwrap();
    let r = m.ensure_repo(&repo("app")).await.unwrap();
    let cfg = push_blob(&m, r, "cfg").await;
    m.claim_event_consumer("hook", "node", 60_000)
        .await
        .unwrap();
    for t in ["a", "b", "c"] {
        m.put_manifest(r, &image(&cfg, 3), &[t]).await.unwrap();
    }
    let before = settled_events(&m, EventPosition::default(), 4).await;
    assert_eq!(before.len(), 4, "{before:?}");
    assert!(
        m.advance_event_consumer("hook", "node", before[1].position())
            .await
            .unwrap()
    );
    // As another server would see them: every stored transaction id far ahead of its own.
    let mut tx = m.begin_write().await.unwrap();
    sqlx::query("UPDATE events SET tx = tx + 1000000000000")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE event_consumers SET after_tx = after_tx + 1000000000000")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(
        m.events_after(EventPosition::default(), 100)
            .await
            .unwrap()
            .is_empty(),
        "ahead of the server, nothing can be read"
    );
    assert_eq!(events::rebase_after_restore(&m.write).await.unwrap(), 4);
    assert_eq!(
        events::rebase_after_restore(&m.write).await.unwrap(),
        0,
        "once"
    );
    let after = m.events_after(EventPosition::default(), 100).await.unwrap();
    let shape = |e: &[Event]| -> Vec<(String, Option<String>)> {
        e.iter().map(|e| (e.kind.clone(), e.tag.clone())).collect()
    };
    assert_eq!(
        shape(&after),
        shape(&before),
        "the same events in the same order"
    );
    let at = m
        .claim_event_consumer("hook", "node", 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        shape(&m.events_after(at, 100).await.unwrap()),
        shape(&before[2..])
    );
    m.put_manifest(r, &image(&cfg, 3), &["d"]).await.unwrap();
    let rest = settled_events(&m, at, 3).await;
    assert_eq!(rest.len(), 3);
    assert_eq!(
        rest[2].tag.as_deref(),
        Some("d"),
        "a new event comes after the restored ones"
    );
}

on_both_dialects! {
    /// The key added last signs, even when keys are added within one millisecond (they were
    /// then ordered by their random kid, and a rotation could leave the old key signing).
    async fn the_newest_token_key_is_first(m) {
        for i in 0..30 {
            // Later keys have smaller kids: a tie on created_at would put an older key first.
            let kid = format!("k{:02}", 29 - i);
            m.add_token_key(&kid, b"secret").await.unwrap();
            let keys = m.token_keys().await.unwrap();
            assert_eq!(keys[0].0, kid, "after adding {kid}: {:?}", keys.iter().map(|k| &k.0).collect::<Vec<_>>());
        }
    }
}
