// PHIseal from Node: EncryptEvents over mutual TLS as the event pipeline (`producer`), then
// every encrypted value opened with `jose` and the destination's private key alone, and checked
// against the original (value, JSON type, and the ciphertext's binding to event and field).
//
//   node encrypt_and_decrypt.mjs <destination_id> <private-key.pem> [events.jsonl]
//
// Settings (environment): ENCRYPTSVC_ADDR (default localhost:50153, encryptsvc's peer port),
// PHISEAL_TLS_DIR (default ../../.run/dev-secrets: ca.pem, producer.pem, producer-key.pem).
// Exits 0 only when every value decrypted to its original.

import { createPrivateKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual } from "node:util";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { compactDecrypt, decodeProtectedHeader } from "jose";

const here = dirname(fileURLToPath(import.meta.url));
const [destinationId, keyPath, eventsPath = join(here, "../../tests/data/sample_events.jsonl")] =
  process.argv.slice(2);
if (!destinationId || !keyPath) {
  console.error("usage: node encrypt_and_decrypt.mjs <destination_id> <private-key.pem> [events.jsonl]");
  process.exit(2);
}
const address = process.env.ENCRYPTSVC_ADDR || "localhost:50153";
const tlsDir = process.env.PHISEAL_TLS_DIR || join(here, "../../.run/dev-secrets");

// The contracts straight from protos/: keepCase keeps the proto field names (destination_id).
const definition = protoLoader.loadSync("phiseal/encrypt/v1/encrypt.proto", {
  includeDirs: [join(here, "../../protos")],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const { EncryptService } = grpc.loadPackageDefinition(definition).phiseal.encrypt.v1;

// Mutual TLS: trust the stack's CA, present the producer's certificate.
const credentials = grpc.credentials.createSsl(
  readFileSync(join(tlsDir, "ca.pem")),
  readFileSync(join(tlsDir, "producer-key.pem")),
  readFileSync(join(tlsDir, "producer.pem")),
);
const client = new EncryptService(address, credentials, {
  // Producers spread calls over every encryptsvc replica (docs/kubernetes.md).
  "grpc.service_config": JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
});

const originals = readFileSync(eventsPath, "utf8")
  .split("\n")
  .filter((line) => line.trim())
  .map((line) => JSON.parse(line));

const response = await new Promise((resolve, reject) => {
  const request = {
    destination_id: destinationId,
    events: originals.map((event) => Buffer.from(JSON.stringify(event))),
  };
  client.EncryptEvents(request, { deadline: Date.now() + 10_000 }, (error, reply) =>
    error ? reject(error) : resolve(reply),
  );
});
client.close();
console.log(`encryptsvc: ${response.results.length} results, kid ${response.kid}, format ${response.format}`);

const privateKey = createPrivateKey(readFileSync(keyPath));

// The path grammar of docs/policies.md: dotted names, [i] for array items, ["…"] otherwise.
const child = (path, key) =>
  typeof key === "number"
    ? `${path}[${key}]`
    : /^[A-Za-z_$][\w$]*$/.test(key)
      ? path ? `${path}.${key}` : key
      : `${path}[${JSON.stringify(key)}]`;
const isJwe = (value) => typeof value === "string" && value.startsWith("eyJ") && value.split(".").length === 5;

// Returns a copy of `node` with every JWE opened; counts what it opened.
async function openAll(node, path, messageId, counts) {
  if (isJwe(node)) {
    const claims = decodeProtectedHeader(node).phiseal ?? {};
    // The binding is authenticated (the protected header is the AEAD's additional data), but
    // only a reader that compares it notices a value moved to another event or field.
    if (claims.mid !== messageId || claims.path !== path || claims.dst !== destinationId) {
      throw new Error(`the value at ${path} is bound to ${JSON.stringify(claims)}, not here`);
    }
    const { plaintext } = await compactDecrypt(node, privateKey);
    counts.opened += 1;
    return JSON.parse(new TextDecoder().decode(plaintext));
  }
  if (Array.isArray(node)) {
    return Promise.all(node.map((item, i) => openAll(item, child(path, i), messageId, counts)));
  }
  if (node && typeof node === "object") {
    const out = {};
    for (const [key, value] of Object.entries(node)) {
      out[key] = await openAll(value, child(path, key), messageId, counts);
    }
    return out;
  }
  return node;
}

const counts = { opened: 0 };
let failures = 0;
for (const [i, result] of response.results.entries()) {
  if (result.result !== "event") {
    console.error(`event ${i}: refused: ${result.error.code} ${result.error.message}`);
    failures += 1;
    continue;
  }
  const sealed = JSON.parse(result.event.toString("utf8"));
  const opened = await openAll(sealed, "", sealed.messageId, counts);
  if (!isDeepStrictEqual(opened, originals[i])) {
    console.error(`event ${i}: decrypted event differs from the original`);
    failures += 1;
  }
}
if (response.encryption_enabled && counts.opened === 0) {
  console.error("encryption is enabled but no value was encrypted: check the policy's fields");
  failures += 1;
}
console.log(`jose: ${counts.opened} values decrypted; ${response.results.length - failures} of ${response.results.length} events equal their originals`);
process.exit(failures ? 1 : 0);
