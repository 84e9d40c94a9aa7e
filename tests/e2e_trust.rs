//! Trust for air-gapped sites, end to end with `strata run --once`, kubesim and real helm 4:
//! - a chart repository over HTTPS that requires a client certificate (mutual TLS): without
//!   one the revision cannot be loaded; with `repositories[].certSecretRef` naming a
//!   `kubernetes.io/tls` Secret it installs, and the key never shows in logs or status;
//! - the site's mirrors from a ConfigMap (`--mirrors-configmap`): the chart repository URL
//!   rewritten to a second server, shown in /status `revision.mirrored`; the ConfigMap
//!   missing is a clear error and nothing is applied.

use std::path::{Path, PathBuf};
use std::time::Duration;

use testkit::cluster::AGENT_NS;
use testkit::scenario::{layered_charts, layered_profiles, stack_converged};
use testkit::{HelmBin, strata_bin};

const LONG: Duration = Duration::from_secs(180);
const HELM: HelmBin = HelmBin::V4;
const DECLARED_GIT: &str = "http://git.example.invalid/platform";

struct World {
    helm: HelmBin,
    dir: tempfile::TempDir,
    cluster: kubesim::Cluster,
    kubeconfig: PathBuf,
    git: testkit::GitServer,
    repo: testkit::TestRepo,
}

async fn world() -> anyhow::Result<World> {
    world_with(HELM).await
}

async fn world_with(helm: HelmBin) -> anyhow::Result<World> {
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let cluster = testkit::cluster::start(kubesim::Config::default(), &kubeconfig).await?;
    let git = testkit::GitServer::start().await?;
    let repo = git.create_repo("platform")?;
    Ok(World {
        helm,
        dir,
        cluster,
        kubeconfig,
        git,
        repo,
    })
}

impl World {
    async fn run_once(&self, name: &str, extra: &[&str]) -> anyhow::Result<(Option<i32>, String)> {
        self.run_once_from(&self.git.http_url("platform"), name, extra)
            .await
    }

    async fn run_once_from(
        &self,
        git_url: &str,
        name: &str,
        extra: &[&str],
    ) -> anyhow::Result<(Option<i32>, String)> {
        let mut args = testkit::agent::agent_args(
            git_url,
            &self.kubeconfig,
            &self.helm.path(),
            &self.dir.path().join(name),
        );
        args.insert(0, "--once".into());
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = self.dir.path().join(format!("{name}.log"));
        let mut agent = testkit::Agent::start(strata_bin!(), &args, &[], log)?;
        let exit = tokio::time::timeout(LONG, agent.child.wait()).await??;
        Ok((exit.code(), agent.logs()))
    }

    fn put(&self, resource: &str, object: serde_json::Value) -> anyhow::Result<()> {
        let key = kubesim::ResourceKey::new("", resource);
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let _ = self.cluster.store().delete(
            &key,
            Some(AGENT_NS),
            name,
            kubesim::Propagation::Background,
        );
        self.cluster.store().create(&key, object)?;
        Ok(())
    }

    fn tls_secret(&self, name: &str, data: &[(&str, &str)]) -> anyhow::Result<()> {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let data: serde_json::Map<String, serde_json::Value> = data
            .iter()
            .map(|(k, v)| (k.to_string(), b64(v).into()))
            .collect();
        self.put(
            "secrets",
            serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": AGENT_NS},
                "type": "kubernetes.io/tls",
                "data": data,
            }),
        )
    }

    fn configmap(&self, name: &str, key: &str, text: &str) -> anyhow::Result<()> {
        self.put(
            "configmaps",
            serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": AGENT_NS},
                "data": {key: text},
            }),
        )
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// The layered profile list with `certSecretRef` on its repository.
fn with_cert_secret(url: &str, secret: &str) -> String {
    layered_profiles(url, "{}").replace(
        &format!("url: {url}\n"),
        &format!("url: {url}\n    certSecretRef: {{name: {secret}}}\n"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_requiring_a_client_certificate_installs_with_its_secret() -> anyhow::Result<()>
{
    client_certificate_from_a_secret(HelmBin::V4).await
}

/// The same with helm 3 (strata fetches the chart itself; helm installs the local archive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_requiring_a_client_certificate_installs_with_its_secret_helm3()
-> anyhow::Result<()> {
    client_certificate_from_a_secret(HelmBin::V3).await
}

async fn client_certificate_from_a_secret(helm: HelmBin) -> anyhow::Result<()> {
    let w = world_with(helm).await?;
    let charts = testkit::ChartRepo::start_mtls(&HELM.path()).await?;
    for chart in layered_charts(&w.dir.path().join("charts"))? {
        charts.add_chart(&chart)?;
    }
    let ca = w.dir.path().join("site-ca.pem");
    std::fs::write(&ca, charts.ca_pem().expect("a TLS repository"))?;
    let client = charts.client_cert().expect("an mTLS repository").clone();

    // No client certificate: the server refuses the handshake, nothing can be loaded.
    w.repo
        .write("profiles.yaml", layered_profiles(&charts.url(), "{}"))?;
    w.repo.commit("platform from the mTLS repository")?;
    let (code, logs) = w
        .run_once("no-cert", &["--ca-file", s(&ca), "--once-timeout", "8s"])
        .await?;
    assert_eq!(code, Some(1), "{logs}");
    let st = testkit::cluster::configmap_status(&w.cluster).expect("status");
    eprintln!("without a client certificate: {:#}", st["rejectedRevision"]);
    assert!(
        st["rejectedRevision"]
            .to_string()
            .contains("requires a client certificate (mutual TLS) (",)
            && st.to_string().contains("certSecretRef"),
        "{st:#}"
    );
    assert!(testkit::release::latest(&w.cluster).is_empty());
    assert_eq!(charts.requests("/index.yaml"), 0, "no request got through");

    // certSecretRef names a Secret that does not exist: a problem naming it.
    w.repo.write(
        "profiles.yaml",
        with_cert_secret(&charts.url(), "charts-client"),
    )?;
    w.repo.commit("present the client certificate")?;
    let (code, logs) = w.run_once("missing", &["--ca-file", s(&ca)]).await?;
    assert_eq!(code, Some(1), "{logs}");
    let st = testkit::cluster::configmap_status(&w.cluster).expect("status");
    let shown = st.to_string();
    assert!(
        shown.contains("repositories[platform].certSecretRef")
            && shown.contains("Secret strata-system/charts-client does not exist"),
        "{st:#}"
    );

    // A key that is not PEM: a problem naming the Secret and the key, not the content.
    w.tls_secret(
        "charts-client",
        &[
            ("tls.crt", &client.cert_pem),
            ("tls.key", "not-a-key-sentinel"),
        ],
    )?;
    let (code, logs) = w.run_once("bad-key", &["--ca-file", s(&ca)]).await?;
    assert_eq!(code, Some(1), "{logs}");
    let st = testkit::cluster::configmap_status(&w.cluster).expect("status");
    let shown = st.to_string();
    assert!(
        shown.contains("key `tls.key` of Secret strata-system/charts-client"),
        "{st:#}"
    );
    assert!(!shown.contains("not-a-key-sentinel") && !logs.contains("not-a-key-sentinel"));
    assert!(testkit::release::latest(&w.cluster).is_empty());

    // The Secret in the kubernetes.io/tls layout: it installs.
    w.tls_secret(
        "charts-client",
        &[("tls.crt", &client.cert_pem), ("tls.key", &client.key_pem)],
    )?;
    let (code, logs) = w.run_once("with-cert", &["--ca-file", s(&ca)]).await?;
    assert_eq!(code, Some(0), "{logs}");
    assert!(stack_converged(&w.cluster));
    let st = testkit::cluster::configmap_status(&w.cluster).expect("status");
    assert_eq!(st["phase"], "Ready", "{st:#}");
    assert!(charts.requests("/index.yaml") > 0);
    let key_body: String = client
        .key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(
        !logs.contains(&key_body[..32]),
        "the key leaked into the logs"
    );
    assert!(!st.to_string().contains(&key_body[..32]));

    // ca.crt in the Secret is trusted for this repository: no --ca-file needed.
    w.tls_secret(
        "charts-client",
        &[
            ("tls.crt", &client.cert_pem),
            ("tls.key", &client.key_pem),
            ("ca.crt", charts.ca_pem().expect("CA")),
        ],
    )?;
    let (code, logs) = w.run_once("secret-ca", &[]).await?;
    assert_eq!(code, Some(0), "{logs}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_from_a_configmap_rewrite_the_chart_repository() -> anyhow::Result<()> {
    let w = world().await?;
    // The repository the profile list names, and the site's mirror of it.
    let upstream = testkit::ChartRepo::start(&HELM.path()).await?;
    let mirror = testkit::ChartRepo::start(&HELM.path()).await?;
    for chart in layered_charts(&w.dir.path().join("charts"))? {
        upstream.add_chart(&chart)?;
        mirror.add_chart(&chart)?;
    }
    let declared = format!("{}/platform", upstream.url());
    w.repo
        .write("profiles.yaml", layered_profiles(&declared, "{}"))?;
    w.repo.commit("platform from upstream")?;

    // --mirrors and --mirrors-configmap exclude each other.
    let (code, logs) = w
        .run_once(
            "both",
            &[
                "--mirrors",
                "/nonexistent",
                "--mirrors-configmap",
                "site-mirrors",
            ],
        )
        .await?;
    assert_eq!(code, Some(2), "{logs}");
    assert!(logs.contains("cannot be used with"), "{logs}");

    // Configured but missing: a clear error, nothing is applied.
    let (code, logs) = w
        .run_once(
            "missing",
            &[
                "--mirrors-configmap",
                "site-mirrors",
                "--once-timeout",
                "6s",
            ],
        )
        .await?;
    assert_eq!(code, Some(2), "{logs}");
    // (--once ends with its deadline in lastError; each cycle's error is logged.)
    assert!(
        logs.contains("ConfigMap strata-system/site-mirrors (--mirrors-configmap) does not exist"),
        "{logs}"
    );
    assert!(testkit::release::latest(&w.cluster).is_empty());
    assert_eq!(upstream.requests("/platform/index.yaml"), 0);

    // The ConfigMap with the mirrors (the --mirrors format under key mirrors.yaml).
    w.configmap(
        "site-mirrors",
        "mirrors.yaml",
        &format!(
            "mirrors:\n  - prefix: {declared}\n    mirror: {}\n  - prefix: {DECLARED_GIT}\n    mirror: {}\n",
            mirror.url(),
            w.git.http_url("platform"),
        ),
    )?;
    // The Git URL given to the agent is unreachable: the ConfigMap rewrites it too.
    let (code, logs) = w
        .run_once_from(
            DECLARED_GIT,
            "mirrored",
            &["--mirrors-configmap", "site-mirrors"],
        )
        .await?;
    assert_eq!(code, Some(0), "{logs}");
    assert!(stack_converged(&w.cluster));
    let st = testkit::cluster::configmap_status(&w.cluster).expect("status");
    assert_eq!(st["phase"], "Ready", "{st:#}");
    eprintln!("revision: {:#}", st["revision"]);
    let mirrored = st["revision"]["mirrored"].as_array().expect("mirrored");
    assert!(
        mirrored
            .iter()
            .any(|m| m["url"] == declared.as_str() && m["fetchedFrom"] == mirror.url().as_str()),
        "{st:#}"
    );
    assert!(
        mirrored
            .iter()
            .any(|m| m["url"] == DECLARED_GIT
                && m["fetchedFrom"] == w.git.http_url("platform").as_str()),
        "{st:#}"
    );
    assert!(mirror.requests("/index.yaml") > 0);
    assert_eq!(upstream.requests("/platform/index.yaml"), 0);
    Ok(())
}

/// Git over HTTPS requiring a client certificate: the agent presents the files of
/// --git-client-cert-file and --git-client-key-file (a mounted kubernetes.io/tls Secret);
/// an unusable key file is refused at start, naming the flags and the file, not the content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_requiring_a_client_certificate_is_fetched_with_the_cert_files() -> anyhow::Result<()> {
    let w = world().await?;
    let git = testkit::GitServer::start_mtls().await?;
    let charts = testkit::ChartRepo::start(&HELM.path()).await?;
    for chart in layered_charts(&w.dir.path().join("charts"))? {
        charts.add_chart(&chart)?;
    }
    let repo = git.create_repo("platform")?;
    repo.write("profiles.yaml", layered_profiles(&charts.url(), "{}"))?;
    repo.commit("platform over mTLS Git")?;
    let ca = w.dir.path().join("git-ca.pem");
    std::fs::write(&ca, git.ca_pem().expect("TLS"))?;
    let client = git.client_cert().expect("mTLS");
    let (cert, key) = (w.dir.path().join("tls.crt"), w.dir.path().join("tls.key"));
    std::fs::write(&cert, &client.cert_pem)?;
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nc2VudGluZWw=\n-----END PRIVATE KEY-----\n",
    )?;
    let url = git.http_url("platform");
    let flags = [
        "--ca-file",
        s(&ca),
        "--git-client-cert-file",
        s(&cert),
        "--git-client-key-file",
        s(&key),
    ];

    let (code, logs) = w.run_once_from(&url, "bad-key", &flags).await?;
    assert_ne!(code, Some(0), "{logs}");
    assert!(
        logs.contains("--git-client-cert-file/--git-client-key-file") && logs.contains(s(&key)),
        "{logs}"
    );
    assert!(!logs.contains("c2VudGluZWw"), "{logs}");

    let (code, logs) = w
        .run_once_from(
            &url,
            "no-cert",
            &["--ca-file", s(&ca), "--once-timeout", "6s"],
        )
        .await?;
    assert_eq!(code, Some(2), "{logs}");
    assert!(logs.contains("--git-client-cert-file"), "{logs}");

    std::fs::write(&key, &client.key_pem)?;
    let (code, logs) = w.run_once_from(&url, "with-cert", &flags).await?;
    assert_eq!(code, Some(0), "{logs}");
    assert!(stack_converged(&w.cluster));
    Ok(())
}
