//! Discovery documents (aggregated `apidiscovery.k8s.io/v2` and legacy APIVersions /
//! APIGroupList / APIResourceList), OpenAPI v3 and v2 documents, and `/version`.

use crate::registry::{Registry, ResourceInfo};
use serde_json::{Map, Value, json};

/// Content-Type of an aggregated discovery answer.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// The Kubernetes version kubesim claims to be.
pub const GIT_VERSION: &str = "v1.35.0";

/// True when the Accept header asks for aggregated discovery v2.
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let params: Vec<&str> = range.split(';').map(str::trim).collect();
        params.contains(&"g=apidiscovery.k8s.io")
            && params.contains(&"v=v2")
            && params.contains(&"as=APIGroupDiscoveryList")
    })
}

/// `GET /version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "35",
        "emulationMajor": "1",
        "emulationMinor": "35",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "34",
        "gitVersion": GIT_VERSION,
        "gitCommit": "kubesim",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25.5",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn scope(r: &ResourceInfo) -> &'static str {
    if r.namespaced {
        "Namespaced"
    } else {
        "Cluster"
    }
}

fn resources_of<'a>(
    reg: &'a Registry,
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'a ResourceInfo> {
    reg.all()
        .iter()
        .filter(move |r| r.group == group && r.versions.iter().any(|v| v == version))
}

fn aggregated_version(reg: &Registry, group: &str, version: &str) -> Value {
    let resources: Vec<Value> = resources_of(reg, group, version)
        .map(|r| {
            let mut subs = Vec::new();
            if r.status {
                subs.push(json!({"subresource": "status",
                    "responseKind": {"group": r.group, "version": version, "kind": r.kind},
                    "verbs": ["get", "patch", "update"]}));
            }
            if r.scale {
                subs.push(json!({"subresource": "scale",
                    "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
                    "verbs": ["get", "patch", "update"]}));
            }
            let mut o = json!({
                "resource": r.plural,
                "responseKind": {"group": r.group, "version": version, "kind": r.kind},
                "scope": scope(r),
                "singularResource": r.singular,
                "verbs": r.verbs(),
            });
            if !r.short_names.is_empty() {
                o["shortNames"] = json!(r.short_names);
            }
            if !r.categories.is_empty() {
                o["categories"] = json!(r.categories);
            }
            if !subs.is_empty() {
                o["subresources"] = Value::Array(subs);
            }
            o
        })
        .collect();
    json!({"version": version, "resources": resources, "freshness": "Current"})
}

/// Aggregated discovery for `/api` (core) or `/apis` (all named groups).
pub fn aggregated(reg: &Registry, core: bool) -> Value {
    let items: Vec<Value> = reg
        .groups()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, versions)| {
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| aggregated_version(reg, &g, v))
                .collect();
            let meta = if core {
                json!({"creationTimestamp": null})
            } else {
                json!({"name": g, "creationTimestamp": null})
            };
            json!({"metadata": meta, "versions": vs})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

/// Legacy `/api`.
pub fn api_versions(server_address: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]})
}

fn api_group(g: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({"name": g, "versions": vs, "preferredVersion": vs[0].clone()})
}

/// Legacy `/apis`.
pub fn api_group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg
        .groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| api_group(&g, &vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// Legacy `/apis/{group}`.
pub fn group(reg: &Registry, g: &str) -> Option<Value> {
    let (_, vs) = reg
        .groups()
        .into_iter()
        .find(|(name, _)| name == g && !g.is_empty())?;
    let mut out = api_group(g, &vs);
    out["kind"] = json!("APIGroup");
    out["apiVersion"] = json!("v1");
    Some(out)
}

/// Legacy `/api/v1` or `/apis/{group}/{version}`.
pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in resources_of(reg, group, version) {
        let mut o = json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": r.verbs(), "storageVersionHash": ""});
        if !r.short_names.is_empty() {
            o["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            o["categories"] = json!(r.categories);
        }
        resources.push(o);
        if r.status {
            resources.push(
                json!({"name": format!("{}/status", r.plural), "singularName": "",
                "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}),
            );
        }
        if r.scale {
            resources.push(json!({"name": format!("{}/scale", r.plural), "singularName": "",
                "namespaced": r.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale",
                "verbs": ["get", "patch", "update"]}));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// The OpenAPI schema name of a kind.
pub fn schema_name(r: &ResourceInfo, version: &str) -> String {
    match r.group.as_str() {
        "" => format!("io.k8s.api.core.{version}.{}", r.kind),
        "apiextensions.k8s.io" => format!(
            "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.{version}.{}",
            r.kind
        ),
        g if g.ends_with(".k8s.io") || !g.contains('.') && !r.custom => {
            let pkg = g.split('.').next().unwrap_or(g);
            format!("io.k8s.api.{pkg}.{version}.{}", r.kind)
        }
        g => {
            let rev: Vec<&str> = g.split('.').rev().collect();
            format!("{}.{version}.{}", rev.join("."), r.kind)
        }
    }
}

fn params(names: &[&str]) -> Value {
    Value::Array(
        names
            .iter()
            .map(|n| json!({"name": n, "in": "query", "description": format!("{n} parameter"), "schema": {"type": "string", "uniqueItems": true}}))
            .collect(),
    )
}

/// The OpenAPI v3 document of one group-version (`None` if nothing is served there).
pub fn openapi_v3(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut schemas = Map::new();
    let mut paths = Map::new();
    let prefix = if group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{group}/{version}")
    };
    let write_params = ["dryRun", "fieldManager", "fieldValidation", "pretty"];
    for r in resources_of(reg, group, version) {
        let name = schema_name(r, version);
        let gvk = json!({"group": r.group, "version": version, "kind": r.kind});
        let reference = json!({"$ref": format!("#/components/schemas/{name}")});
        schemas.insert(
            name.clone(),
            json!({
                "description": format!("{} (kubesim: permissive schema; the server validates)", r.kind),
                "type": "object",
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                },
                "x-kubernetes-preserve-unknown-fields": true,
                "x-kubernetes-group-version-kind": [gvk],
            }),
        );
        let content = |schema: &Value| json!({"application/json": {"schema": schema}, "application/yaml": {"schema": schema}});
        let op = |action: &str, ps: &[&str], body: bool| {
            let mut o = json!({
                "operationId": format!("{action}{}", r.kind),
                "parameters": params(ps),
                "responses": {"200": {"description": "OK", "content": content(&reference)}},
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
            });
            if body {
                o["requestBody"] = json!({"content": content(&reference), "required": true});
            }
            o
        };
        let base = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{prefix}/{}", r.plural)
        };
        let mut path_params = vec![
            json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}}),
        ];
        if r.namespaced {
            path_params.push(json!({"name": "namespace", "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}}));
        }
        let mut patch_op = op(
            "patch",
            &[
                "dryRun",
                "fieldManager",
                "fieldValidation",
                "force",
                "pretty",
            ],
            false,
        );
        let patch_content: Map<String, Value> = [
            "application/apply-patch+yaml",
            "application/json-patch+json",
            "application/merge-patch+json",
        ]
        .iter()
        .map(|ct| (ct.to_string(), json!({"schema": {"type": "object"}})))
        .collect();
        patch_op["requestBody"] = json!({"content": patch_content, "required": true});
        paths.insert(
            format!("{base}/{{name}}"),
            json!({
                "get": op("get", &["pretty"], false),
                "put": op("put", &write_params, true),
                "patch": patch_op,
                "delete": op("delete", &["dryRun", "gracePeriodSeconds", "propagationPolicy", "pretty"], false),
                "parameters": path_params,
            }),
        );
        let mut coll = json!({
            "get": op("list", &["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "watch"], false),
            "post": op("post", &write_params, true),
            "delete": op("deletecollection", &["labelSelector", "fieldSelector", "dryRun"], false),
        });
        if r.namespaced {
            coll["parameters"] = json!([{"name": "namespace", "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}}]);
        }
        paths.insert(base, coll);
        if r.status {
            let mut p = path_params.clone();
            p.truncate(2);
            let base = if r.namespaced {
                format!(
                    "{prefix}/namespaces/{{namespace}}/{}/{{name}}/status",
                    r.plural
                )
            } else {
                format!("{prefix}/{}/{{name}}/status", r.plural)
            };
            paths.insert(
                base,
                json!({"get": op("get", &["pretty"], false), "put": op("put", &write_params, true),
                    "patch": op("patch", &["dryRun", "fieldManager", "fieldValidation", "force"], false), "parameters": p}),
            );
        }
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": GIT_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// A document serialized once, with a stable short hash of those bytes (for `?hash=` URLs and
/// ETags).
fn rendered(v: &Value) -> (bytes::Bytes, String) {
    let text = v.to_string();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (bytes::Bytes::from(text), format!("{h:016X}"))
}

/// The OpenAPI documents of one registry, rendered once (a real API server builds them when
/// its resources change and serves the same bytes, with an ETag, until the next change):
/// the v3 index, each group-version's v3 document with its hash, and the v2 document.
#[derive(Debug)]
pub struct OpenApiDocs {
    registry: Registry,
    /// `/openapi/v3` and its ETag.
    pub index: (bytes::Bytes, String),
    /// By key (`api/v1`, `apis/apps/v1`): the document and its hash (also its ETag).
    pub v3: std::collections::HashMap<String, (bytes::Bytes, String)>,
    /// `/openapi/v2` (JSON) and its ETag.
    pub v2: (bytes::Bytes, String),
}

impl OpenApiDocs {
    pub fn build(reg: &Registry) -> Self {
        let mut v3 = std::collections::HashMap::new();
        let mut paths = Map::new();
        for (g, versions) in reg.groups() {
            for v in versions {
                let Some(doc) = openapi_v3(reg, &g, &v) else {
                    continue;
                };
                let key = if g.is_empty() {
                    format!("api/{v}")
                } else {
                    format!("apis/{g}/{v}")
                };
                let (body, h) = rendered(&doc);
                paths.insert(
                    key.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={h}")}),
                );
                v3.insert(key, (body, h));
            }
        }
        Self {
            registry: reg.clone(),
            index: rendered(&json!({"paths": paths})),
            v2: rendered(&openapi_v2(reg)),
            v3,
        }
    }

    /// Whether these documents describe `reg`.
    pub fn describes(&self, reg: &Registry) -> bool {
        self.registry == *reg
    }
}

/// A Swagger 2.0 document of everything (`/openapi/v2`), permissive like the v3 documents.
pub fn openapi_v2(reg: &Registry) -> Value {
    let mut defs = Map::new();
    for r in reg.all() {
        for v in &r.versions {
            defs.insert(
                schema_name(r, v),
                json!({"type": "object", "x-kubernetes-group-version-kind": [{"group": r.group, "version": v, "kind": r.kind}]}),
            );
        }
    }
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": GIT_VERSION}, "paths": {}, "definitions": defs})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated("application/json, */*"));
        assert!(!wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
        ));
    }

    #[test]
    fn documents_cover_the_registry() {
        let reg = Registry::builtin();
        let apis = aggregated(&reg, false);
        let apps = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == "apps")
            .unwrap();
        let deploy = apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        assert_eq!(deploy["scope"], "Namespaced");
        assert_eq!(deploy["shortNames"], json!(["deploy"]));
        assert_eq!(deploy["subresources"][0]["subresource"], "status");
        let core = aggregated(&reg, true);
        assert_eq!(core["items"].as_array().unwrap().len(), 1);
        let hpa = group(&reg, "autoscaling").unwrap();
        assert_eq!(hpa["preferredVersion"]["version"], "v2");
        let rl = resource_list(&reg, "", "v1").unwrap();
        assert!(
            rl["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "namespaces/status")
        );
        let docs = OpenApiDocs::build(&reg);
        let idx: Value = serde_json::from_slice(&docs.index.0).unwrap();
        let (apps, apps_hash) = &docs.v3["apis/apps/v1"];
        assert_eq!(
            idx["paths"]["apis/apps/v1"]["serverRelativeURL"],
            format!("/openapi/v3/apis/apps/v1?hash={apps_hash}")
        );
        assert_eq!(
            serde_json::from_slice::<Value>(apps).unwrap(),
            openapi_v3(&reg, "apps", "v1").unwrap()
        );
        assert!(docs.describes(&reg));
        let mut more = reg.clone();
        more.register_crd(&json!({"spec": {"group": "example.com", "scope": "Cluster",
            "names": {"kind": "Widget", "plural": "widgets"},
            "versions": [{"name": "v1", "served": true}]}}))
            .unwrap();
        assert!(!docs.describes(&more), "a new resource: built again");
        let doc = openapi_v3(&reg, "apps", "v1").unwrap();
        let p = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(p["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(
            p["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["name"] == "fieldValidation")
        );
    }
}
