// Validates the cert-manager (cert-manager.io/v1: Certificate, Issuer) and Prometheus Operator
// (monitoring.coreos.com/v1: ServiceMonitor) documents of YAML files against the schemas of
// those projects' CRDs, as packaged by @kubernetes-models (types, required fields, enums,
// patterns). These schemas accept unknown fields, so a misspelt optional field is not caught
// here. Every other kind is skipped.
//
// Usage: node validate-crs.mjs FILE...   (exits 1 on an invalid document or if none was found)
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { Certificate, Issuer } from "@kubernetes-models/cert-manager/cert-manager.io/v1";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const models = {
  "cert-manager.io/v1 Certificate": Certificate,
  "cert-manager.io/v1 Issuer": Issuer,
  "monitoring.coreos.com/v1 ServiceMonitor": ServiceMonitor,
};

let failed = 0;
let checked = 0;
for (const path of process.argv.slice(2)) {
  for (const doc of parseAllDocuments(readFileSync(path, "utf8"))) {
    const object = doc.toJS();
    const Model = object && models[`${object.apiVersion} ${object.kind}`];
    if (!Model) continue;
    checked += 1;
    const name = `${path} (${object.kind} ${object.metadata?.name})`;
    try {
      new Model(object).validate();
      console.log(`ok   ${name}`);
    } catch (error) {
      failed += 1;
      console.log(`FAIL ${name}: ${error.message}`);
    }
  }
}
// The schemas must reject something, or this check proves nothing.
try {
  new Certificate({ metadata: { name: "x" }, spec: { secretName: "s" } }).validate();
  failed += 1;
  console.log("FAIL a Certificate without issuerRef passed");
} catch {
  console.log("ok   rejects a Certificate without issuerRef");
}
if (checked === 0) {
  failed += 1;
  console.log("FAIL no cert-manager or ServiceMonitor documents found");
}
process.exit(failed ? 1 : 0);
