//! Delivery checks: the kustomize manifests in `deploy/` render with the pinned kubectl and say
//! what the agent needs (security context, probes, grace period, configuration, RBAC); the
//! Cluster API payload in `deploy/capi/` is exactly what `scripts/gen-capi.sh` generates now and
//! stays far below the ConfigMap size limit; the delivery scripts are valid bash (and
//! shellcheck-clean where shellcheck is installed).
//!
//! Tools: `$STRATA_TOOLS_DIR/kubectl/kubectl`, else `<workspace>/.tools/kubectl/kubectl`
//! (installed by `scripts/install-tools.sh`, which `scripts/test.sh` runs first).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kubectl() -> Result<PathBuf> {
    let path = testkit::tools::dir().join("kubectl/kubectl");
    ensure!(
        path.is_file(),
        "pinned kubectl not found at {}: run scripts/install-tools.sh (or set STRATA_TOOLS_DIR)",
        path.display()
    );
    Ok(path)
}

/// `kubectl kustomize <dir>` (dir relative to the repository root).
fn kustomize(dir: &str) -> Result<String> {
    let out = Command::new(kubectl()?)
        .arg("kustomize")
        .arg(repo().join(dir))
        .output()
        .with_context(|| format!("running kubectl kustomize {dir}"))?;
    ensure!(
        out.status.success(),
        "kubectl kustomize {dir} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn documents(yaml: &str) -> Result<Vec<Value>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).context("parsing rendered YAML")?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn render(dir: &str) -> Result<Vec<Value>> {
    documents(&kustomize(dir)?)
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Result<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .with_context(|| format!("no {kind} named {name} in the rendered manifests"))
}

fn kinds_and_names(docs: &[Value]) -> BTreeSet<(String, String, String)> {
    docs.iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap_or_default().to_owned(),
                d["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                d["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

/// Go-style duration as used by the agent's flags ("90s", "5m", "1h30m") in seconds, read
/// with strata's one duration codec.
fn go_duration_secs(text: &str) -> Result<u64> {
    Ok(strata_core::GoDuration::parse(text)
        .with_context(|| format!("bad duration {text:?}"))?
        .as_duration()
        .as_secs())
}

fn agent_container(deployment: &Value) -> Result<&Value> {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "strata"))
        .context("Deployment strata has no container named strata")
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

#[test]
fn base_renders_every_object_the_agent_needs() -> Result<()> {
    let docs = render("deploy")?;
    let have = kinds_and_names(&docs);
    let ns = "strata-system";
    for (kind, namespace, name) in [
        ("Namespace", "", ns),
        ("ServiceAccount", ns, "strata"),
        ("ClusterRole", "", "strata"),
        ("ClusterRoleBinding", "", "strata"),
        ("ConfigMap", ns, "strata-config"),
        ("Deployment", ns, "strata"),
        ("Service", ns, "strata"),
    ] {
        let key = (kind.to_owned(), namespace.to_owned(), name.to_owned());
        ensure!(have.contains(&key), "missing {key:?}; rendered: {have:?}");
    }
    // The Namespace comes first so `kubectl apply` and a ClusterResourceSet create it before
    // the namespaced objects.
    ensure!(
        docs[0]["kind"] == "Namespace",
        "first object is {}",
        docs[0]["kind"]
    );

    // The ClusterRoleBinding grants the ClusterRole to the Deployment's ServiceAccount.
    let binding = find(&docs, "ClusterRoleBinding", "strata")?;
    ensure!(binding["roleRef"]["kind"] == "ClusterRole" && binding["roleRef"]["name"] == "strata");
    let deployment = find(&docs, "Deployment", "strata")?;
    let sa = &deployment["spec"]["template"]["spec"]["serviceAccountName"];
    ensure!(
        binding["subjects"].as_array().is_some_and(|s| s
            .iter()
            .any(|s| s["kind"] == "ServiceAccount" && &s["name"] == sa && s["namespace"] == ns)),
        "ClusterRoleBinding strata does not bind ServiceAccount {sa} in {ns}"
    );

    let config = find(&docs, "ConfigMap", "strata-config")?;
    for key in [
        "STRATA_GIT_URL",
        "STRATA_GIT_REF",
        "STRATA_PROFILES_PATH",
        "STRATA_INTERVAL",
    ] {
        ensure!(
            config["data"][key].as_str().is_some_and(|v| !v.is_empty()),
            "ConfigMap strata-config lacks {key}"
        );
    }
    Ok(())
}

#[test]
fn deployment_is_hardened_probed_and_outlives_helm() -> Result<()> {
    let docs = render("deploy")?;
    let deployment = find(&docs, "Deployment", "strata")?;
    let pod = &deployment["spec"]["template"]["spec"];
    let c = agent_container(deployment)?;

    ensure!(deployment["spec"]["replicas"] == 1, "replicas must be 1");
    ensure!(
        deployment["spec"]["strategy"]["type"] == "Recreate",
        "two agents must never run at once (strategy Recreate)"
    );

    // Pod and container security context.
    ensure!(pod["securityContext"]["runAsNonRoot"] == true);
    ensure!(pod["securityContext"]["runAsUser"] == 65532);
    ensure!(pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault");
    let sc = &c["securityContext"];
    ensure!(sc["runAsNonRoot"] == true, "container runAsNonRoot: {sc}");
    ensure!(sc["runAsUser"] == 65532, "container runAsUser: {sc}");
    ensure!(
        sc["readOnlyRootFilesystem"] == true,
        "readOnlyRootFilesystem: {sc}"
    );
    ensure!(
        sc["allowPrivilegeEscalation"] == false,
        "allowPrivilegeEscalation: {sc}"
    );
    ensure!(
        sc["capabilities"]["drop"] == serde_json::json!(["ALL"]),
        "capabilities.drop: {sc}"
    );
    ensure!(sc["seccompProfile"]["type"] == "RuntimeDefault");
    ensure!(
        sc["capabilities"]["add"].is_null(),
        "no capability may be added"
    );

    // Probes on the status API port.
    let port = c["ports"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "http"))
        .context("container port named http")?;
    ensure!(port["containerPort"] == 8080, "status API port: {port}");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        ensure!(get["path"] == path, "{probe} path: {get}");
        ensure!(
            get["port"] == "http" || get["port"] == 8080,
            "{probe} port: {get}"
        );
    }

    // /tmp is the only writable place: an emptyDir, and every home/cache points into it.
    let tmp_mount = c["volumeMounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["mountPath"] == "/tmp"))
        .context("no volume mounted at /tmp")?;
    let tmp_volume = pod["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == tmp_mount["name"]))
        .context("volume for /tmp")?;
    ensure!(
        tmp_volume["emptyDir"].is_object(),
        "/tmp is not an emptyDir: {tmp_volume}"
    );
    for var in [
        "HOME",
        "HELM_CACHE_HOME",
        "HELM_CONFIG_HOME",
        "HELM_DATA_HOME",
    ] {
        let v = env_value(c, var).with_context(|| format!("env {var} not set"))?;
        ensure!(
            v["value"].as_str().is_some_and(|p| p.starts_with("/tmp")),
            "{var} must be under /tmp: {v}"
        );
    }
    let config = find(&docs, "ConfigMap", "strata-config")?;
    ensure!(
        config["data"]["STRATA_WORK_DIR"]
            .as_str()
            .is_some_and(|p| p.starts_with("/tmp/")),
        "STRATA_WORK_DIR must be under /tmp"
    );

    // Configuration from the ConfigMap, credentials from an optional Secret, own namespace
    // from the Downward API.
    let env_from = c["envFrom"].as_array().context("envFrom")?;
    ensure!(
        env_from
            .iter()
            .any(|e| e["configMapRef"]["name"] == "strata-config"),
        "envFrom lacks ConfigMap strata-config"
    );
    let user = env_value(c, "STRATA_GIT_USERNAME").context("env STRATA_GIT_USERNAME")?;
    let key_ref = &user["valueFrom"]["secretKeyRef"];
    ensure!(
        key_ref["name"] == "strata-git-credentials" && key_ref["optional"] == true,
        "STRATA_GIT_USERNAME must come from the optional Secret strata-git-credentials: {user}"
    );
    let cred_mount = c["volumeMounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["mountPath"] == "/etc/strata/git"))
        .context("no credentials mount at /etc/strata/git")?;
    let cred_volume = pod["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == cred_mount["name"]))
        .context("volume for /etc/strata/git")?;
    ensure!(
        cred_volume["secret"]["secretName"] == "strata-git-credentials"
            && cred_volume["secret"]["optional"] == true,
        "credentials volume must be the optional Secret strata-git-credentials: {cred_volume}"
    );
    // Every *_FILE setting in the ConfigMap points into the credentials mount.
    for (key, value) in config["data"].as_object().context("ConfigMap data")? {
        if key.ends_with("_FILE") {
            ensure!(
                value
                    .as_str()
                    .is_some_and(|v| v.starts_with("/etc/strata/git/")),
                "{key} points outside the credentials mount: {value}"
            );
        }
    }
    let ns = env_value(c, "STRATA_NAMESPACE").context("env STRATA_NAMESPACE")?;
    ensure!(ns["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace");

    // Resources are set (requests and a memory limit).
    ensure!(c["resources"]["requests"]["cpu"].is_string());
    ensure!(c["resources"]["requests"]["memory"].is_string());
    ensure!(c["resources"]["limits"]["memory"].is_string());

    // The grace period outlives the longest helm timeout: the default timeout and the 10m
    // documented for the longest profile, plus a margin.
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .context("terminationGracePeriodSeconds")?;
    let default_timeout = go_duration_secs(
        config["data"]["STRATA_DEFAULT_TIMEOUT"]
            .as_str()
            .context("STRATA_DEFAULT_TIMEOUT")?,
    )?;
    let longest = default_timeout.max(600);
    ensure!(
        grace >= longest + 30,
        "terminationGracePeriodSeconds {grace} must exceed the longest helm timeout {longest}s by a margin"
    );
    Ok(())
}

#[test]
fn service_exposes_the_status_api_to_prometheus() -> Result<()> {
    let docs = render("deploy")?;
    let svc = find(&docs, "Service", "strata")?;
    let port = svc["spec"]["ports"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "http"))
        .context("Service port named http")?;
    ensure!(port["port"] == 8080, "Service port: {port}");
    let a = &svc["metadata"]["annotations"];
    ensure!(a["prometheus.io/scrape"] == "true", "annotations: {a}");
    ensure!(a["prometheus.io/port"] == "8080", "annotations: {a}");
    ensure!(a["prometheus.io/path"] == "/metrics", "annotations: {a}");

    // The selector matches the agent's pods.
    let deployment = find(&docs, "Deployment", "strata")?;
    let labels = deployment["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .context("pod labels")?;
    let selector = svc["spec"]["selector"].as_object().context("selector")?;
    ensure!(!selector.is_empty());
    for (k, v) in selector {
        ensure!(
            labels.get(k) == Some(v),
            "selector {k}={v} does not match the pod labels"
        );
    }
    Ok(())
}

#[test]
fn narrow_rbac_overlay_has_no_cluster_wide_wildcard() -> Result<()> {
    let docs = render("deploy/examples/narrow-rbac")?;
    let have = kinds_and_names(&docs);
    ensure!(
        !have.contains(&("ClusterRoleBinding".into(), String::new(), "strata".into())),
        "the base's cluster-wide binding must be removed"
    );
    // No ClusterRole grants "*" on resources.
    for role in docs.iter().filter(|d| d["kind"] == "ClusterRole") {
        for rule in role["rules"].as_array().into_iter().flatten() {
            ensure!(
                !rule["resources"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r == "*")),
                "ClusterRole {} still grants every resource",
                role["metadata"]["name"]
            );
        }
    }
    // Every namespace the example profile list installs into exists and has a Role bound to
    // the agent's ServiceAccount, and so does the agent's own namespace.
    let examples: Value = serde_saphyr::from_str(&std::fs::read_to_string(
        repo().join("examples/profiles.yaml"),
    )?)?;
    let default_ns = examples["defaults"]["namespace"]
        .as_str()
        .unwrap_or("default");
    let mut namespaces: BTreeSet<&str> = examples["profiles"]
        .as_array()
        .context("examples/profiles.yaml profiles")?
        .iter()
        .map(|p| p["namespace"].as_str().unwrap_or(default_ns))
        .collect();
    ensure!(!namespaces.is_empty());
    for ns in &namespaces {
        find(&docs, "Namespace", ns)?;
    }
    namespaces.insert("strata-system");
    for ns in namespaces {
        let binding = docs
            .iter()
            .find(|d| d["kind"] == "RoleBinding" && d["metadata"]["namespace"] == ns)
            .with_context(|| format!("no RoleBinding in {ns}"))?;
        ensure!(
            binding["subjects"][0]["name"] == "strata"
                && binding["subjects"][0]["namespace"] == "strata-system",
            "RoleBinding in {ns} is not for strata: {binding}"
        );
        let role = binding["roleRef"]["name"].as_str().context("roleRef")?;
        ensure!(
            docs.iter().any(|d| d["kind"] == "Role"
                && d["metadata"]["namespace"] == ns
                && d["metadata"]["name"] == role),
            "RoleBinding in {ns} refers to missing Role {role}"
        );
    }
    // The agent can still write its status ConfigMap.
    let agent = docs
        .iter()
        .find(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == "strata-system")
        .context("Role in strata-system")?;
    ensure!(
        agent["rules"]
            .as_array()
            .is_some_and(|rules| rules.iter().any(|r| {
                r["resources"]
                    .as_array()
                    .is_some_and(|x| x.iter().any(|x| x == "configmaps"))
                    && r["verbs"]
                        .as_array()
                        .is_some_and(|v| v.iter().any(|v| v == "patch"))
            })),
        "agent Role cannot patch its status ConfigMap"
    );
    // The Deployment is untouched.
    find(&docs, "Deployment", "strata")?;
    Ok(())
}

const PAYLOAD: &str = "deploy/capi/strata-agent-manifests.yaml";
const BOOTSTRAP_PAYLOAD: &str = "deploy/capi/bootstrap/strata-agent-manifests.yaml";
const PAYLOAD_LIMIT: usize = 64 * 1024;

#[test]
fn capi_payload_is_up_to_date() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let out = Command::new("bash")
        .arg(repo().join("scripts/gen-capi.sh"))
        .arg(tmp.path())
        .env("KUBECTL", kubectl()?)
        .output()
        .context("running scripts/gen-capi.sh")?;
    ensure!(
        out.status.success(),
        "scripts/gen-capi.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (generated, committed_path) in [
        ("strata-agent-manifests.yaml", PAYLOAD),
        ("bootstrap/strata-agent-manifests.yaml", BOOTSTRAP_PAYLOAD),
    ] {
        let fresh = std::fs::read_to_string(tmp.path().join(generated))?;
        let committed = std::fs::read_to_string(repo().join(committed_path))?;
        if fresh != committed {
            let line = fresh
                .lines()
                .zip(committed.lines())
                .position(|(a, b)| a != b)
                .map_or_else(|| "length".to_owned(), |n| format!("line {}", n + 1));
            bail!(
                "{committed_path} is stale (first difference at {line}): run scripts/gen-capi.sh and commit it"
            );
        }
    }
    Ok(())
}

#[test]
fn capi_payload_holds_the_rendered_agent_and_is_small() -> Result<()> {
    let committed = std::fs::read_to_string(repo().join(PAYLOAD))?;
    let size = committed.len();
    println!("{PAYLOAD}: {size} bytes (limit checked: {PAYLOAD_LIMIT}; ConfigMap limit 1 MiB)");
    ensure!(
        size < PAYLOAD_LIMIT,
        "payload is {size} bytes, over {PAYLOAD_LIMIT}"
    );

    let cm: Value = serde_saphyr::from_str(&committed)?;
    ensure!(cm["kind"] == "ConfigMap" && cm["metadata"]["name"] == "strata-agent-manifests");
    let payload = cm["data"]["strata.yaml"]
        .as_str()
        .context("data.strata.yaml")?;
    ensure!(
        payload == kustomize("deploy/capi/agent")?,
        "payload differs from kubectl kustomize deploy/capi/agent"
    );

    // The payload is the base plus the per-cluster profile path.
    let docs = documents(payload)?;
    let base = render("deploy")?;
    ensure!(
        kinds_and_names(&docs) == kinds_and_names(&base),
        "payload objects differ from deploy/"
    );
    let config = find(&docs, "ConfigMap", "strata-config")?;
    ensure!(
        config["data"]["STRATA_PROFILES_PATH"]
            .as_str()
            .is_some_and(|p| p.contains("{cluster}")),
        "payload profile path is not per cluster: {}",
        config["data"]["STRATA_PROFILES_PATH"]
    );
    let c = agent_container(find(&docs, "Deployment", "strata")?)?;
    ensure!(
        c["envFrom"]
            .as_array()
            .and_then(|e| e.last())
            .is_some_and(|e| e["configMapRef"]["name"] == "strata-cluster"
                && e["configMapRef"]["optional"] == true),
        "per-cluster overrides (optional ConfigMap strata-cluster) must be loaded last"
    );
    Ok(())
}

/// Bootstrap mode, for a cluster without a CNI (and kube-proxy) yet: deploy/bootstrap and the
/// ClusterResourceSet variant run the agent on a control-plane node with the host's network
/// and resolver, tolerate a not-ready node, and reach the API server without the Service IP.
#[test]
fn bootstrap_variants_run_before_the_cni() -> Result<()> {
    let taints = [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/network-unavailable",
        "node.cloudprovider.kubernetes.io/uninitialized",
        "node-role.kubernetes.io/control-plane",
    ];
    for dir in ["deploy/bootstrap", "deploy/capi/bootstrap-agent"] {
        let docs = render(dir)?;
        let d = find(&docs, "Deployment", "strata")?;
        let spec = &d["spec"]["template"]["spec"];
        ensure!(spec["hostNetwork"] == true, "{dir}: hostNetwork");
        ensure!(spec["dnsPolicy"] == "Default", "{dir}: dnsPolicy Default");
        ensure!(
            spec["priorityClassName"] == "system-cluster-critical",
            "{dir}: priorityClassName"
        );
        ensure!(
            spec["nodeSelector"]["node-role.kubernetes.io/control-plane"] == "",
            "{dir}: a control-plane node"
        );
        let tolerated: Vec<&str> = spec["tolerations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["key"].as_str())
            .collect();
        for taint in taints {
            ensure!(
                tolerated.contains(&taint),
                "{dir}: no toleration for {taint}"
            );
        }
        let c = agent_container(d)?;
        let host = env_value(c, "KUBERNETES_SERVICE_HOST").context("KUBERNETES_SERVICE_HOST")?;
        let port = env_value(c, "KUBERNETES_SERVICE_PORT").context("KUBERNETES_SERVICE_PORT")?;
        if dir == "deploy/bootstrap" {
            // The control-plane endpoint, from ConfigMap strata-bootstrap.
            for (e, key) in [
                (host, "KUBERNETES_SERVICE_HOST"),
                (port, "KUBERNETES_SERVICE_PORT"),
            ] {
                let r = &e["valueFrom"]["configMapKeyRef"];
                ensure!(
                    r["name"] == "strata-bootstrap" && r["key"] == key,
                    "{dir}: {e}"
                );
            }
            let cm = find(&docs, "ConfigMap", "strata-bootstrap")?;
            ensure!(cm["data"]["KUBERNETES_SERVICE_PORT"] == "6443", "{cm}");
        } else {
            // The same bytes for every cluster: the API server on this node.
            ensure!(
                host["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP",
                "{dir}: {host}"
            );
            ensure!(port["value"] == "6443", "{dir}: {port}");
        }
        // Everything else is the base's (plus, for the bootstrap overlay, its ConfigMap).
        let mut expected = kinds_and_names(&render("deploy")?);
        if dir == "deploy/bootstrap" {
            expected.extend(kinds_and_names(&[find(
                &docs,
                "ConfigMap",
                "strata-bootstrap",
            )?
            .clone()]));
        }
        ensure!(
            kinds_and_names(&docs) == expected,
            "{dir}: objects differ from deploy/"
        );
    }
    // The payload of the bootstrap ClusterResourceSet is that overlay, and small.
    let committed = std::fs::read_to_string(repo().join(BOOTSTRAP_PAYLOAD))?;
    ensure!(
        committed.len() < PAYLOAD_LIMIT,
        "{BOOTSTRAP_PAYLOAD}: {} bytes",
        committed.len()
    );
    let cm: Value = serde_saphyr::from_str(&committed)?;
    ensure!(cm["metadata"]["name"] == "strata-agent-bootstrap-manifests");
    ensure!(
        cm["data"]["strata.yaml"].as_str()
            == Some(kustomize("deploy/capi/bootstrap-agent")?.as_str()),
        "{BOOTSTRAP_PAYLOAD} differs from kubectl kustomize deploy/capi/bootstrap-agent"
    );
    let crs = render("deploy/capi/bootstrap")?;
    let set = crs
        .iter()
        .find(|d| d["kind"] == "ClusterResourceSet")
        .context("no ClusterResourceSet in deploy/capi/bootstrap")?;
    ensure!(
        set["spec"]["resources"][0]["name"] == "strata-agent-bootstrap-manifests",
        "{set}"
    );
    ensure!(
        set["spec"]["clusterSelector"]["matchLabels"]["strata.dev/agent"] == "bootstrap",
        "{set}"
    );
    Ok(())
}

#[test]
fn cluster_resource_set_reconciles_the_payload() -> Result<()> {
    let docs = render("deploy/capi")?;
    let crs = docs
        .iter()
        .find(|d| d["kind"] == "ClusterResourceSet")
        .context("no ClusterResourceSet")?;
    ensure!(
        crs["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("addons.cluster.x-k8s.io/")),
        "apiVersion {}",
        crs["apiVersion"]
    );
    ensure!(crs["spec"]["strategy"] == "Reconcile");
    ensure!(crs["spec"]["clusterSelector"]["matchLabels"]["strata.dev/agent"] == "enabled");
    let resources = crs["spec"]["resources"].as_array().context("resources")?;
    ensure!(!resources.is_empty());
    for r in resources {
        ensure!(r["kind"] == "ConfigMap", "resource {r}");
        let cm = find(&docs, "ConfigMap", r["name"].as_str().context("name")?)?;
        ensure!(
            cm["metadata"]["namespace"] == crs["metadata"]["namespace"],
            "payload ConfigMap must be in the ClusterResourceSet's namespace"
        );
    }
    Ok(())
}

fn shell_scripts() -> Vec<PathBuf> {
    [
        "scripts/gen-capi.sh",
        "scripts/check-image-layout.sh",
        "scripts/image-rootfs.sh",
        "kind-config/run.sh",
    ]
    .iter()
    .map(|p| repo().join(p))
    .collect()
}

#[test]
fn delivery_scripts_are_valid_bash() -> Result<()> {
    for script in shell_scripts() {
        ensure!(script.is_file(), "{} is missing", script.display());
        let out = Command::new("bash").arg("-n").arg(&script).output()?;
        ensure!(
            out.status.success(),
            "bash -n {}: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        // Under pipefail, `producer | grep -q` fails by chance: grep exits at its first match,
        // the producer dies of SIGPIPE, and the pipeline's status is 141 (this made CI miss
        // that the agent binary is dynamically linked).
        let text = std::fs::read_to_string(&script)?;
        if text.contains("pipefail") {
            let racy: Vec<String> = text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim_start().starts_with('#'))
                .filter(|(_, l)| {
                    l.split('|')
                        .skip(1)
                        .any(|cmd| cmd.trim_start().starts_with("grep -q"))
                })
                .map(|(n, l)| format!("{}:{}: {}", script.display(), n + 1, l.trim()))
                .collect();
            ensure!(
                racy.is_empty(),
                "pipes into `grep -q` under pipefail (capture the output first):\n{}",
                racy.join("\n")
            );
        }
        if let Some(shellcheck) = which("shellcheck") {
            let out = Command::new(shellcheck).arg(&script).output()?;
            ensure!(
                out.status.success(),
                "shellcheck {}:\n{}",
                script.display(),
                String::from_utf8_lossy(&out.stdout)
            );
        } else {
            eprintln!(
                "shellcheck not installed: only `bash -n` checked {}",
                script.display()
            );
        }
    }
    Ok(())
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

#[test]
fn go_duration_parser_reads_agent_durations() -> Result<()> {
    assert_eq!(go_duration_secs("90s")?, 90);
    assert_eq!(go_duration_secs("5m")?, 300);
    assert_eq!(go_duration_secs("1h30m")?, 5400);
    assert!(go_duration_secs("5").is_err());
    assert!(go_duration_secs("5d").is_err());
    Ok(())
}

/// `KEY=VALUE` pairs of the `ENV` lines in the Dockerfile's final stage (after the last FROM).
fn dockerfile_final_env() -> Result<Vec<String>> {
    let text = std::fs::read_to_string(repo().join("Dockerfile"))?;
    let lines: Vec<&str> = text.lines().collect();
    let last_from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .context("Dockerfile has no FROM")?;
    Ok(lines[last_from..]
        .iter()
        .filter_map(|l| l.strip_prefix("ENV "))
        .map(|kv| kv.trim().to_owned())
        .collect())
}

/// The `image_env=( ... )` list of scripts/check-image-layout.sh.
fn layout_check_env() -> Result<Vec<String>> {
    let text = std::fs::read_to_string(repo().join("scripts/check-image-layout.sh"))?;
    let start = text
        .find("image_env=(\n")
        .context("no image_env=( in check-image-layout.sh")?;
    let body = &text[start + "image_env=(\n".len()..];
    let end = body.find("\n)").context("image_env not closed")?;
    Ok(body[..end]
        .lines()
        .map(|l| l.trim().trim_matches('"').to_owned())
        .collect())
}

#[test]
fn image_environment_matches_the_layout_check() -> Result<()> {
    let image = dockerfile_final_env()?;
    let checked = layout_check_env()?;
    ensure!(
        !image.is_empty(),
        "the Dockerfile's final stage sets no ENV"
    );
    ensure!(
        image == checked,
        "Dockerfile final-stage ENV {image:?} differs from check-image-layout.sh image_env {checked:?}"
    );
    // Everything the image writes lands in /tmp (the emptyDir): the homes helm and git use.
    for var in [
        "HOME",
        "HELM_CACHE_HOME",
        "HELM_CONFIG_HOME",
        "HELM_DATA_HOME",
        "STRATA_WORK_DIR",
    ] {
        let kv = image
            .iter()
            .find(|kv| kv.starts_with(&format!("{var}=")))
            .with_context(|| format!("Dockerfile does not set {var}"))?;
        ensure!(
            kv[var.len() + 1..].starts_with("/tmp"),
            "{kv} is not under /tmp"
        );
    }
    // The final stage runs as 65532 and starts the agent.
    let text = std::fs::read_to_string(repo().join("Dockerfile"))?;
    let final_stage = &text[text.rfind("\nFROM ").context("FROM")?..];
    ensure!(
        final_stage.contains("\nUSER 65532:65532\n"),
        "final stage must run as 65532"
    );
    ensure!(
        final_stage
            .lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().last() == Some("scratch")),
        "final stage must be scratch (no shell)"
    );
    ensure!(final_stage.contains("ENTRYPOINT [\"/usr/local/bin/strata\"]"));
    Ok(())
}

#[test]
fn kind_overlay_runs_the_local_image_against_the_served_repository() -> Result<()> {
    let docs = render("kind-config/overlay")?;
    let base = render("deploy")?;
    ensure!(
        kinds_and_names(&docs) == kinds_and_names(&base),
        "the kind overlay must deploy exactly the objects of deploy/"
    );
    let c = agent_container(find(&docs, "Deployment", "strata")?)?;
    ensure!(c["image"] == "strata:kind", "image: {}", c["image"]);
    ensure!(
        c["imagePullPolicy"] == "IfNotPresent" || c["imagePullPolicy"] == "Never",
        "an image loaded with `kind load` must not be pulled: {}",
        c["imagePullPolicy"]
    );
    // run.sh substitutes this exact placeholder with the git daemon's address.
    let url = find(&docs, "ConfigMap", "strata-config")?["data"]["STRATA_GIT_URL"]
        .as_str()
        .context("STRATA_GIT_URL")?
        .to_owned();
    let placeholder = "git://host.kind.internal:9418/";
    ensure!(url.starts_with(placeholder), "kind Git URL {url}");
    let script = std::fs::read_to_string(repo().join("kind-config/run.sh"))?;
    ensure!(
        script.contains(&format!("s#{placeholder}#")),
        "kind-config/run.sh no longer substitutes {placeholder}"
    );
    // The overlay's ConfigMap still carries the base's other settings (merge, not replace).
    ensure!(find(&docs, "ConfigMap", "strata-config")?["data"]["STRATA_WORK_DIR"] == "/tmp/strata");
    Ok(())
}

/// `kubectl --kubeconfig <cfg> ARGS...` with optional stdin; fails with kubectl's stderr.
async fn kubectl_on(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Result<String> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(kubectl()?);
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("starting kubectl")?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().context("kubectl stdin")?;
        pipe.write_all(input.as_bytes()).await?;
        drop(pipe);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .with_context(|| format!("kubectl {args:?} timed out"))??;
    ensure!(
        out.status.success(),
        "kubectl {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Applies `manifests` to a fresh simulated cluster with the pinned kubectl and waits for the
/// agent's Deployment to roll out (kubesim's controllers make its pod ready).
async fn apply_to_kubesim(manifests: &str, apply_args: &[&str]) -> Result<Vec<Value>> {
    let cluster = kubesim::start(kubesim::Config::default()).await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig)?;
    let result = async {
        let mut args = vec!["apply", "-f", "-"];
        args.extend_from_slice(apply_args);
        let applied = kubectl_on(&kubeconfig, &args, Some(manifests)).await?;
        ensure!(
            applied.contains("deployment.apps/strata created")
                || applied.contains("deployment.apps/strata serverside-applied"),
            "kubectl apply output: {applied}"
        );
        kubectl_on(
            &kubeconfig,
            &[
                "-n",
                "strata-system",
                "rollout",
                "status",
                "deployment/strata",
                "--timeout=30s",
            ],
            None,
        )
        .await?;
        let listed = kubectl_on(
            &kubeconfig,
            &[
                "get",
                "namespaces,serviceaccounts,configmaps,deployments,services,clusterroles,\
                 clusterrolebindings,roles,rolebindings",
                "-A",
                "-o",
                "json",
            ],
            None,
        )
        .await?;
        let list: Value = serde_json::from_str(&listed)?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }
    .await;
    cluster.shutdown().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_applies_to_the_simulated_cluster_and_rolls_out() -> Result<()> {
    let rendered = kustomize("deploy")?;
    let items = apply_to_kubesim(&rendered, &[]).await?;
    // Everything rendered is in the cluster, as rendered.
    for doc in documents(&rendered)? {
        let kind = doc["kind"].as_str().context("kind")?;
        let name = doc["metadata"]["name"].as_str().context("name")?;
        let live = items
            .iter()
            .find(|i| {
                i["kind"] == kind
                    && i["metadata"]["name"] == name
                    && i["metadata"]["namespace"] == doc["metadata"]["namespace"]
            })
            .with_context(|| format!("{kind} {name} not in the cluster after apply"))?;
        if kind == "Deployment" {
            let sc = &live["spec"]["template"]["spec"]["containers"][0]["securityContext"];
            ensure!(
                sc["readOnlyRootFilesystem"] == true,
                "live securityContext: {sc}"
            );
            ensure!(
                live["status"]["readyReplicas"] == 1,
                "status: {}",
                live["status"]
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capi_payload_and_narrow_rbac_apply_to_the_simulated_cluster() -> Result<()> {
    // What the ClusterResourceSet applies to a workload cluster (server-side, as a controller
    // re-applying it on every change would).
    let committed = std::fs::read_to_string(repo().join(PAYLOAD))?;
    let cm: Value = serde_saphyr::from_str(&committed)?;
    let payload = cm["data"]["strata.yaml"]
        .as_str()
        .context("data.strata.yaml")?;
    let items = apply_to_kubesim(payload, &["--server-side", "--field-manager=capi-crs"]).await?;
    ensure!(
        items
            .iter()
            .any(|i| i["kind"] == "ConfigMap" && i["metadata"]["name"] == "strata-config"),
        "payload ConfigMap strata-config missing"
    );

    let narrow = kustomize("deploy/examples/narrow-rbac")?;
    let items = apply_to_kubesim(&narrow, &[]).await?;
    ensure!(
        !items
            .iter()
            .any(|i| i["kind"] == "ClusterRoleBinding" && i["metadata"]["name"] == "strata"),
        "narrow overlay applied the cluster-wide binding"
    );
    ensure!(
        items
            .iter()
            .filter(|i| i["kind"] == "RoleBinding" && i["metadata"]["name"] == "strata-release")
            .count()
            >= 3,
        "narrow overlay RoleBindings missing"
    );
    Ok(())
}

/// Environment variables `strata run --help` documents (`[env: NAME=...]`).
fn agent_env_vars() -> Result<BTreeSet<String>> {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["run", "--help"])
        .output()
        .context("running strata run --help")?;
    ensure!(out.status.success(), "strata run --help failed");
    let help = String::from_utf8(out.stdout)?;
    let vars: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect();
    ensure!(
        vars.contains("STRATA_GIT_URL"),
        "strata run --help lists no env vars: {help}"
    );
    Ok(vars)
}

#[test]
fn manifests_only_set_variables_the_agent_reads() -> Result<()> {
    let known = agent_env_vars()?;
    let mut used = BTreeSet::new();
    for dir in [
        "deploy",
        "deploy/capi/agent",
        "kind-config/overlay",
        "deploy/bootstrap",
        "deploy/capi/bootstrap-agent",
    ] {
        let docs = render(dir)?;
        let config = find(&docs, "ConfigMap", "strata-config")?;
        used.extend(
            config["data"]
                .as_object()
                .context("data")?
                .keys()
                .map(|k| (dir, k.clone())),
        );
        let c = agent_container(find(&docs, "Deployment", "strata")?)?;
        for e in c["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().context("env name")?;
            if name.starts_with("STRATA_") {
                used.insert((dir, name.to_owned()));
            }
        }
    }
    // The commented-out credential settings users are told to uncomment.
    let source = std::fs::read_to_string(repo().join("deploy/base/configmap.yaml"))?;
    for line in source.lines() {
        if let Some(rest) = line.trim().strip_prefix("# STRATA_")
            && let Some((name, _)) = rest.split_once(':')
        {
            used.insert((
                "deploy/base/configmap.yaml (commented)",
                format!("STRATA_{name}"),
            ));
        }
    }
    ensure!(used.len() > 10, "found too few settings: {used:?}");
    let unknown: Vec<_> = used.iter().filter(|(_, k)| !known.contains(k)).collect();
    ensure!(
        unknown.is_empty(),
        "settings the agent does not read (strata run --help): {unknown:?}; known: {known:?}"
    );
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The image layout check (scripts/check-image-layout.sh) on this test build of strata:
/// read-only root, only /tmp writable, uid 65532, the image's environment; git, helm,
/// `strata --help` and `strata plan` work there. Then its in-cluster phase against a simulated
/// cluster started here: deploy/ applied with kubectl, the agent run with the applied
/// ConfigMap as environment, the service-account directory at the in-cluster path and
/// KUBERNETES_SERVICE_HOST/PORT, `strata run --once` must make the status ConfigMap Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_layout_and_in_cluster_run_pass_for_this_build() -> Result<()> {
    layout_check(None).await
}

/// The same in-cluster run with deploy/bootstrap on a cluster without kube-proxy: the
/// kubelet's KUBERNETES_SERVICE_HOST/PORT (the Service IP) lead to a closed port, and the agent
/// and its helm processes must reach the API server at the control-plane endpoint the
/// overlay's ConfigMap strata-bootstrap gives (kubesim's address here) to get Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_overlay_reaches_the_api_at_the_control_plane_endpoint() -> Result<()> {
    layout_check(Some("deploy/bootstrap")).await
}

async fn layout_check(overlay: Option<&str>) -> Result<()> {
    if !is_root() {
        eprintln!("skipped: scripts/check-image-layout.sh needs root (chroot, mount namespace)");
        return Ok(());
    }
    let cluster = kubesim::start(kubesim::Config::default()).await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig)?;
    let in_cluster = cluster.write_in_cluster_env(dir.path().join("sa"), "strata-system")?;
    let api_port = in_cluster
        .env
        .iter()
        .find(|(k, _)| k == "KUBERNETES_SERVICE_PORT")
        .map(|(_, v)| v.clone())
        .context("KUBERNETES_SERVICE_PORT")?;
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(repo().join("scripts/check-image-layout.sh"))
        .arg(env!("CARGO_BIN_EXE_strata"))
        .env("STRATA_TOOLS_DIR", testkit::tools::dir())
        .env("KUBECTL", kubectl()?)
        .env("CLUSTER_KUBECONFIG", &kubeconfig)
        .env("CLUSTER_SA_DIR", &in_cluster.dir)
        .env("CLUSTER_API_PORT", api_port)
        .kill_on_drop(true);
    if let Some(overlay) = overlay {
        cmd.env("OVERLAY", overlay);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(240), cmd.output()).await;
    cluster.shutdown().await;
    let out = out.context("check-image-layout timed out")??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "check-image-layout failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "ok: nothing outside /tmp is writable",
        "ok: helm renders a chart",
        "ok: strata --help",
        "ok: strata plan against the example repository",
        "ok: strata run --once in the cluster",
        "says Ready",
        "PASS:",
    ] {
        ensure!(stdout.contains(step), "no {step:?} in:\n{stdout}");
    }
    if let Some(overlay) = overlay {
        ensure!(
            stdout.contains(&format!("kubectl apply of {overlay} to kubesim")),
            "{overlay} was not applied:\n{stdout}"
        );
    }
    Ok(())
}

/// Dockerfile instructions with continuation lines joined and comments dropped.
fn dockerfile_instructions() -> Result<Vec<String>> {
    let text = std::fs::read_to_string(repo().join("Dockerfile"))?;
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            out.push(std::mem::take(&mut current));
        }
    }
    ensure!(
        current.is_empty(),
        "Dockerfile ends inside a continued line"
    );
    Ok(out)
}

#[test]
fn dockerfile_stages_args_and_sources_resolve() -> Result<()> {
    let instructions = dockerfile_instructions()?;
    let ignored: Vec<String> = std::fs::read_to_string(repo().join(".dockerignore"))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let mut global_args = BTreeSet::new();
    let mut stages: Vec<String> = Vec::new();
    let mut seen_from = false;
    for ins in &instructions {
        let words: Vec<&str> = ins.split_whitespace().collect();
        match words.first().copied() {
            Some("ARG") if !seen_from => {
                let name = words[1].split('=').next().unwrap_or_default();
                global_args.insert(name.to_owned());
            }
            Some("FROM") => {
                seen_from = true;
                let image = words[1..]
                    .iter()
                    .find(|w| !w.starts_with("--"))
                    .context("FROM without image")?;
                if let Some(var) = image.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
                    ensure!(
                        global_args.contains(var),
                        "FROM {image}: ARG {var} not declared before the first FROM"
                    );
                }
                if let Some(pos) = words.iter().position(|w| w.eq_ignore_ascii_case("AS")) {
                    stages.push(words.get(pos + 1).context("AS without name")?.to_string());
                }
            }
            Some("COPY") => {
                let from = words.iter().find_map(|w| w.strip_prefix("--from="));
                if let Some(stage) = from {
                    ensure!(
                        stages.iter().any(|s| s == stage),
                        "COPY --from={stage}: no earlier stage of that name ({stages:?})"
                    );
                } else {
                    let paths: Vec<&str> = words[1..]
                        .iter()
                        .filter(|w| !w.starts_with("--"))
                        .copied()
                        .collect();
                    ensure!(
                        paths.len() >= 2,
                        "COPY needs a source and a destination: {ins}"
                    );
                    for src in &paths[..paths.len() - 1] {
                        if *src == "." {
                            continue;
                        }
                        ensure!(
                            repo().join(src).exists(),
                            "COPY source {src} does not exist"
                        );
                        let first = src.split('/').next().unwrap_or_default();
                        ensure!(
                            !ignored.iter().any(|i| i == first || i == src),
                            "COPY source {src} is excluded by .dockerignore"
                        );
                    }
                }
            }
            _ => {}
        }
    }
    for stage in ["build", "helm", "rootfs", "debian"] {
        ensure!(stages.iter().any(|s| s == stage), "no stage {stage}");
    }
    // The build context keeps what the build needs and drops what must not be sent.
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "crates",
        "demo",
        "tests",
        "scripts",
    ] {
        ensure!(
            !ignored.iter().any(|i| i == needed),
            ".dockerignore excludes {needed}, which the build needs"
        );
    }
    for excluded in ["target", ".tools", ".git"] {
        ensure!(
            ignored.iter().any(|i| i == excluded),
            ".dockerignore must exclude {excluded}"
        );
    }
    // The helm stage selects the major with HELM_MAJOR and copies the binary install-tools.sh
    // verified.
    let helm_copy = instructions
        .iter()
        .find(|i| i.contains("install-tools.sh /tools"))
        .context("the helm stage does not run scripts/install-tools.sh")?;
    ensure!(
        helm_copy.contains("/tools/helm${HELM_MAJOR}/helm"),
        "{helm_copy}"
    );
    Ok(())
}
