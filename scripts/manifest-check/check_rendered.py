#!/usr/bin/env python3
"""Checks what schemas cannot: how the chart's and the examples' objects refer to each other.

Usage: check_rendered.py DEFAULT.yaml ALL_ON.yaml DASHBOARD.json TLS_EXAMPLE.yaml

- the chart with the default values renders exactly the operator's objects (no ServiceMonitor,
  dashboard or MqttCluster), with the probes on the port the operator listens on;
- with everything on, the ServiceMonitor selects the metrics Service and names its port, and
  the dashboard ConfigMap carries the Grafana sidecar label and the dashboard file unchanged;
- the cert-manager example: the server Certificate writes the Secret the MqttCluster mounts, is
  issued by a CA Issuer (so the Secret has the ca.crt that checks client certificates), names
  the client Service, and the client Certificate is for client auth from the same CA.
"""

import json
import sys

import yaml


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def check(condition, message):
    if not condition:
        raise SystemExit(f"FAIL {message}")
    print(f"ok   {message}")


def env(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def main(default_path, all_on_path, dashboard_path, tls_path):
    default = load(default_path)
    kinds = sorted(d["kind"] for d in default)
    check(kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Role", "RoleBinding",
                    "Service", "ServiceAccount"], f"default values render the operator only: {kinds}")
    deployment = by_kind(default, "Deployment")[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    port = container["ports"][0]
    check(env(container)["HMQ_OPERATOR_HTTP_ADDR"] == f"0.0.0.0:{port['containerPort']}",
          "the operator listens on the container port the probes use")
    check(container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
          and container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]},
          "liveness /healthz, readiness /readyz")
    pod = deployment["spec"]["template"]["spec"]
    sc = container["securityContext"]
    check(pod["securityContext"]["runAsUser"] == 65532 and pod["securityContext"]["runAsNonRoot"]
          and sc["readOnlyRootFilesystem"] and sc["capabilities"]["drop"] == ["ALL"]
          and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault",
          "non-root 65532, read-only root, no capabilities, seccomp RuntimeDefault")
    sa = by_kind(default, "ServiceAccount")[0]["metadata"]["name"]
    check(pod["serviceAccountName"] == sa, "the pods run as the chart's ServiceAccount")

    all_on = load(all_on_path)
    service = by_kind(all_on, "Service")[0]
    monitor = by_kind(all_on, "ServiceMonitor")[0]
    selector = monitor["spec"]["selector"]["matchLabels"]
    check(all(service["metadata"]["labels"].get(k) == v for k, v in selector.items()),
          "the ServiceMonitor selects the metrics Service")
    check(monitor["spec"]["endpoints"][0]["port"] in [p["name"] for p in service["spec"]["ports"]],
          "the ServiceMonitor scrapes a port the Service names")
    check(monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]],
          "the ServiceMonitor looks in the Service's namespace")
    dashboard = by_kind(all_on, "ConfigMap")[0]
    check(dashboard["metadata"]["labels"].get("grafana_dashboard") == "1",
          "the dashboard ConfigMap has the label grafana_dashboard: \"1\"")
    with open(dashboard_path) as f:
        expected = json.load(f)
    check(json.loads(dashboard["data"]["hmq-broker.json"]) == expected,
          "the dashboard ConfigMap holds dashboards/hmq-broker.json")
    check(len(by_kind(all_on, "MqttCluster")) == 1, "mqttCluster.enabled renders one MqttCluster")

    tls = load(tls_path)
    cluster = by_kind(tls, "MqttCluster")[0]
    certificates = {c["metadata"]["name"]: c for c in by_kind(tls, "Certificate")}
    issuers = {i["metadata"]["name"]: i for i in by_kind(tls, "Issuer")}
    secret = cluster["spec"]["tls"]["secretName"]
    server = [c for c in certificates.values() if c["spec"]["secretName"] == secret]
    check(len(server) == 1, f"one Certificate writes the Secret {secret} the MqttCluster mounts")
    server = server[0]["spec"]
    check(cluster["spec"]["tls"]["requireClientCertificate"], "client certificates are required")
    issuer = issuers[server["issuerRef"]["name"]]
    check(server["issuerRef"]["kind"] == "Issuer" and "ca" in issuer["spec"],
          "the server Certificate comes from a CA Issuer (its Secret gets ca.crt)")
    ca = [c for c in certificates.values()
          if c["spec"]["secretName"] == issuer["spec"]["ca"]["secretName"]]
    check(len(ca) == 1 and ca[0]["spec"].get("isCA"), "the CA Issuer's Secret is an isCA Certificate")
    name = cluster["metadata"]["name"]
    check(name in server["dnsNames"] and any(n.startswith(f"{name}.") for n in server["dnsNames"]),
          f"the server Certificate names the client Service {name}")
    check("server auth" in server["usages"], "the server Certificate is for server auth")
    clients = [c["spec"] for c in certificates.values() if "client auth" in c["spec"].get("usages", [])]
    check(clients and all(c["issuerRef"]["name"] == server["issuerRef"]["name"] for c in clients),
          "client Certificates come from the same CA")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
